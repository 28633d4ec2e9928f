"""Score Image Model: a trained ModelDirectory over an ImageDirectory -> scored table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..component_source import default
from ..directories import StagedOutput
from ..directories.dataframe_directory import (
    ASSIGNED_LABELS, PROBABILITY_PREFIX, SCORED_LABELS, write_dataframe_directory)
from ..directories.image_directory import ImageDirectory, UnreadableImage
from ..directories.meta import EXTENSION_KEY
from ..errors import UserError
from ..inference import Predictor, same_size_groups
from ..models.model_directory import TrainedModel, read_trained
from ..parallel import loader_workers
from ..transforms.ledger import Ledger

log = logging.getLogger(__name__)
_SPEC = "score_image_model"


@dataclass
class ScoreReport:
    scored: int = 0
    failed: list[tuple[object, str]] = field(default_factory=list)  # (row id, reason)


class _ScoringSet(Dataset):
    """(row index, tensor or None, error) for the given rows, so one unreadable image never stops the run."""

    def __init__(self, directory: ImageDirectory, transform, rows: list[int]):
        self.directory = directory
        self.transform = transform
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        i = self.rows[k]
        try:
            return i, self.transform(self.directory.open_image(self.directory.rows[i])), None
        except UnreadableImage as exc:  # the one reader's refusal, reported as Apply reports it
            return i, None, exc.reason
        except Exception as exc:  # any decoder or transform failure is this image's, not the run's
            return i, None, f"{exc.__class__.__name__}: {exc}"


def _collate(items):
    failed = [(i, err) for i, t, err in items if t is None]
    return same_size_groups([(i, t) for i, t, _ in items if t is not None]), failed


def predict(model: TrainedModel, directory: ImageDirectory, *, batch_size: int = default(_SPEC, "batch_size"),
            workers: int | None = None, device: torch.device | None = None,
            precision: str = default(_SPEC, "precision"),
            memory_format: str = default(_SPEC, "memory_format")) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Class probabilities (n × classes, NaN rows for unreadable images) in row order."""
    predictor = Predictor(model, Ledger(directory.extension), device=device, precision=precision,
                          memory_format=memory_format)
    return predict_rows(predictor, directory, list(range(len(directory))), batch_size=batch_size, workers=workers)


def predict_rows(predictor: Predictor, directory: ImageDirectory, rows: list[int], *, batch_size: int,
                 workers: int | None = None, progress: bool = True) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Probabilities of the given rows (len(rows) × classes, NaN for unreadable images), and the failures
    as (row index, reason)."""
    workers = loader_workers(predictor.cuda) if workers is None else workers
    loader = DataLoader(_ScoringSet(directory, predictor.per_image, rows), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate, pin_memory=predictor.cuda)
    position = {row: k for k, row in enumerate(rows)}
    probs = np.full((len(rows), len(predictor.categories)), np.nan, dtype=np.float32)
    failed: list[tuple[int, str]] = []
    with tqdm(total=len(rows), unit="img", desc="scoring", disable=not progress or len(rows) < 500) as bar:
        for groups, bad in loader:
            failed += bad
            for indices, batch in groups:
                probs[[position[i] for i in indices]] = predictor.probabilities(batch)
            bar.update(sum(len(indices) for indices, _ in groups) + len(bad))
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


def _none_readable(directory: ImageDirectory, failed: list[tuple[int, str]]) -> str:
    """The one line for a set whose images all failed: the first failure names the file and the reason."""
    row, reason = directory.rows[failed[0][0]], " ".join(failed[0][1].split())
    return (f"dataset: none of its {len(failed)} images could be read (image id {row.get('id')}, "
            f"{row.get('image_info', {}).get('file_name')}: {reason}); check that the folder holds image files "
            "Pillow reads, or rerun Convert to Image Directory on the original images")


def score_image_model(model_dir: str | Path, image_dir: str | Path, output_dir: str | Path, *,
                      batch_size: int = default(_SPEC, "batch_size"),
                      precision: str = default(_SPEC, "precision"), memory_format: str = default(_SPEC, "memory_format"),
                      workers: int | None = None) -> ScoreReport:
    """Score every image of `image_dir` with the trained model; write a DataFrameDirectory."""
    model = read_trained(model_dir, input_name="trained_model")
    directory = ImageDirectory.load(image_dir, input_name="dataset")
    with StagedOutput(output_dir, output_name="scored_dataset") as stage:
        probs, failed = predict(model, directory, batch_size=batch_size, workers=workers, precision=precision,
                                memory_format=memory_format)
        write_scored(stage.path, directory, model.categories, probs, failed)
    return ScoreReport(len(directory) - len(failed), [(directory.rows[i].get("id"), err) for i, err in failed])


def write_scored(path: Path, directory: ImageDirectory, categories: list[str], probs: np.ndarray,
                 failed: list[tuple[int, str]]) -> None:
    """The scored DataFrameDirectory of `directory` into `path` (a stage); UserError when no image could be read."""
    if failed and len(failed) == len(directory):  # raised inside the stage: nothing is published
        raise UserError(_none_readable(directory, failed))
    table = scored_table(directory, categories, probs)
    extension = {EXTENSION_KEY: {"label_column": directory.label_column, "classes": list(categories),
                                 "task": "MultiClassification"}}
    # The schema's roles are what the designer's built-in Evaluate Model reads to find these columns.
    score_columns = {ASSIGNED_LABELS: SCORED_LABELS, **{PROBABILITY_PREFIX + c: PROBABILITY_PREFIX + c
                                                        for c in categories}}
    write_dataframe_directory(path, table, label_column=directory.label_column, score_columns=score_columns,
                              extension=extension)
