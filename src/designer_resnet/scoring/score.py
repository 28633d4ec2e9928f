"""Score Image Model: a trained ModelDirectory over an ImageDirectory -> scored table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.parallel import loader_workers
from ..directories import StagedOutput
from ..directories.dataframe_directory import write_dataframe_directory
from ..directories.image_directory import ImageDirectory
from ..models.model_directory import TrainedModel, read_trained
from ..transforms.ops import DETERMINISTIC_OPS, RANDOM_OPS, image_pipeline, pending_ops, tensor_pipeline

log = logging.getLogger(__name__)
SCORED_LABELS = "Scored Labels"
PROBABILITY_PREFIX = "Scored Probabilities_"
# Written into the scored table's `_meta.yaml` extension so Evaluate Model finds the label column.
EXTENSION_KEY = "designer_resnet"


@dataclass
class ScoreReport:
    scored: int = 0
    failed: list[tuple[object, str]] = field(default_factory=list)  # (row id, reason)


class _ScoringSet(Dataset):
    """(row index, tensor or None, error) so one unreadable image never stops the run."""

    def __init__(self, directory: ImageDirectory, transform):
        self.directory = directory
        self.transform = transform

    def __len__(self) -> int:
        return len(self.directory.rows)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(self.directory.open_image(self.directory.rows[i])), None
        except Exception as exc:  # any decoder or transform failure is this image's, not the run's
            return i, None, f"{exc.__class__.__name__}: {exc}"


def _pipeline(ops: list, mean: list, std: list):
    """(per-image transform, per-batch finish).

    When every op acts on the image, items stay uint8 and one vectorised
    normalisation runs per batch on the device: less copying than float
    tensors per image. Otherwise the ops run per image as written.
    """
    if all(op[0] in DETERMINISTIC_OPS for op in ops):
        per_image = T.Compose([image_pipeline(ops), T.PILToTensor()])
        mean_t = torch.tensor(mean).view(1, 3, 1, 1) * 255
        std_t = torch.tensor(std).view(1, 3, 1, 1) * 255

        def finish(batch: torch.Tensor) -> torch.Tensor:
            return (batch.float() - mean_t.to(batch.device)) / std_t.to(batch.device)

        return per_image, finish
    full = ops + [["Normalize", {"mean": mean, "std": std}]]
    return tensor_pipeline(full), lambda batch: batch


def _collate(items):
    good = [(i, t) for i, t, _ in items if t is not None]
    failed = [(i, err) for i, t, err in items if t is None]
    if good:
        try:
            batch = torch.stack([t for _, t in good])
        except RuntimeError:
            # Sizes differ: the model's pre-processing does not fix the size; report, don't crash.
            sizes = {tuple(t.shape) for _, t in good}
            failed += [(i, f"image size {tuple(t.shape)} differs from the rest of the batch {sorted(sizes)}")
                       for i, t in good]
            return [], None, failed
        return [i for i, _ in good], batch, failed
    return [], None, failed


def scoring_ops(model: TrainedModel, directory: ImageDirectory) -> list:
    """The data's still-pending deterministic ops, then the model's pre-processing (normalisation follows)."""
    data_ops = [op for op in pending_ops(directory.extension) if op[0] not in RANDOM_OPS]
    return data_ops + list(model.preprocess.get("transforms") or [])


@torch.inference_mode()
def predict(model: TrainedModel, directory: ImageDirectory, *, batch_size: int = 64, workers: int | None = None,
            device: torch.device | None = None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Class probabilities (n × classes, NaN rows for unreadable images) in row order."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    net = model.model.to(device).eval()
    if amp:
        net = net.to(memory_format=torch.channels_last)
    workers = loader_workers(device.type == "cuda") if workers is None else workers
    per_image, finish = _pipeline(scoring_ops(model, directory), model.preprocess["mean"], model.preprocess["std"])
    loader = DataLoader(_ScoringSet(directory, per_image), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate, pin_memory=amp)
    probs = np.full((len(directory), len(model.categories)), np.nan, dtype=np.float32)
    failed: list[tuple[int, str]] = []
    with tqdm(total=len(directory), unit="img", desc="scoring", disable=len(directory) < 500) as bar:
        for indices, batch, bad in loader:
            failed += bad
            if batch is not None:
                batch = finish(batch.to(device, non_blocking=True))
                if amp:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = net(batch)
                probs[indices] = torch.softmax(logits.float(), dim=1).cpu().numpy()
            bar.update(len(indices) + len(bad))
    return probs, failed


def scored_table(directory: ImageDirectory, categories: list[str], probs: np.ndarray) -> pd.DataFrame:
    """Input's non-image columns, then Scored Labels, then one probability column per class."""
    columns = {}
    for name in directory.non_image_columns():
        columns[name] = [row.get(name) for row in directory.rows]
    ok = ~np.isnan(probs).any(axis=1)
    best = np.where(ok, np.nan_to_num(probs).argmax(axis=1), -1)
    columns[SCORED_LABELS] = [categories[b] if b >= 0 else None for b in best]
    for c, name in enumerate(categories):
        columns[PROBABILITY_PREFIX + name] = probs[:, c].astype(np.float64)
    return pd.DataFrame(columns)


def score_image_model(model_dir: str | Path, image_dir: str | Path, output_dir: str | Path, *,
                      batch_size: int = 64, workers: int | None = None) -> ScoreReport:
    """Score every image of `image_dir` with the trained model; write a DataFrameDirectory."""
    model = read_trained(model_dir, input_name="trained_model")
    directory = ImageDirectory.load(image_dir, input_name="dataset")
    with StagedOutput(output_dir, output_name="scored_dataset") as stage:
        probs, failed = predict(model, directory, batch_size=batch_size, workers=workers)
        table = scored_table(directory, model.categories, probs)
        extension = {EXTENSION_KEY: {"label_column": directory.label_column, "classes": model.categories,
                                     "task": "MultiClassification"}}
        write_dataframe_directory(stage.path, table, extension=extension)
    report = ScoreReport(len(directory) - len(failed), [(directory.rows[i].get("id"), err) for i, err in failed])
    return report
