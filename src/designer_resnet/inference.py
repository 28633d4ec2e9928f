"""The one predictor Score Image Model and the served model share: a trained model, ready to give class probabilities.

It owns everything between a decoded image and its probabilities: the network
on the device (eval mode; precision and layout from compute.Compute: bf16
autocast and channels_last on CUDA unless told otherwise), the
per-image pipeline and the batch finish from the model's pre-processing, and
the grouping of equally sized images into batches. Callers only decode images
and write answers, so a change to batching or autocast is made here, once.
"""

from __future__ import annotations

from functools import partial
from itertools import islice
from typing import Callable, Iterable

import numpy as np
import torch
import torchvision.transforms as T

from .compute import AUTO, Compute, default_device
from .errors import UserError
from .models.model_directory import TrainedModel
from .transforms.batch import normalize
from .transforms.ledger import Ledger
from .transforms.ops import DETERMINISTIC_OPS, image_pipeline, tensor_pipeline

# Images per forward pass when the predictor batches itself (the served model's requests).
BATCH_SIZE = 32


def inference_pipeline(ops: list[list], mean: list, std: list) -> tuple[Callable, Callable]:
    """(per-image transform, per-batch finish): the ops, then normalisation with `mean` and `std` (0-1 scale).

    When every op acts on the image, items stay uint8 and one vectorised
    normalisation runs per batch on the device: less copying than float
    tensors per image. Otherwise the ops run per image as written.
    """
    if all(op[0] in DETERMINISTIC_OPS for op in ops):
        per_image = T.Compose([image_pipeline(ops), T.PILToTensor()])
        return per_image, partial(normalize, mean=list(mean), std=list(std))
    full = list(ops) + [["Normalize", {"mean": list(mean), "std": list(std)}]]
    return tensor_pipeline(full), lambda batch: batch


def same_size_groups(items: list[tuple[int, torch.Tensor]]) -> list[tuple[list[int], torch.Tensor]]:
    """(indices, stacked batch) per image size, so images of another size never sink a batch."""
    groups: dict[tuple, list] = {}
    for i, tensor in items:
        groups.setdefault(tuple(tensor.shape), []).append((i, tensor))
    return [([i for i, _ in group], torch.stack([t for _, t in group])) for group in groups.values()]


class Predictor:
    """A trained model set up for inference on one device.

    `ledger`: the ledger of the images it will be given, so it applies only
    what their files still lack of the model's pre-processing; None for raw
    images (the whole chain). `device`: CUDA when available unless given;
    `precision` and `memory_format` as compute.Compute resolves them. The
    network is moved to the device in place.
    """

    def __init__(self, model: TrainedModel, ledger: Ledger | None = None, *, device: torch.device | None = None,
                 precision: str = AUTO, memory_format: str = AUTO):
        self.device = device or default_device()
        self.compute = Compute.resolve(self.device, precision=precision, memory_format=memory_format)
        self.categories = list(model.categories)
        self.net = self.compute.place(model.model).eval()
        pre = model.preprocess
        ops = ledger.ops_to_score(pre) if ledger is not None else pre["transforms"]
        # per_image travels to DataLoader workers, so it is a plain picklable transform, not a bound method.
        self.per_image, self._finish = inference_pipeline(ops, pre["mean"], pre["std"])

    @property
    def cuda(self) -> bool:
        """True when the network runs on a CUDA device (loaders feeding it should pin memory)."""
        return self.device.type == "cuda"

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Softmax of the network on one stacked batch of `per_image` outputs (all of one size)."""
        batch = self.compute.layout(self._finish(batch.to(self.device, non_blocking=True)))
        with self.compute.autocast():
            logits = self.net(batch)
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if not np.isfinite(probs).all():  # NaN or infinite logits: broken weights, not an answer
            raise UserError("trained_model: the model outputs NaN (its weights or an activation are not finite numbers, "
                            "as after training diverged); retrain it, e.g. with a lower learning rate")
        return probs

    def predict(self, images: Iterable, *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Class probabilities (images × classes) for PIL images, in order.

        `images` is consumed `batch_size` at a time, each image transformed as
        soon as it is drawn, so a generator that decodes on demand never holds
        more than one batch.
        """
        images = iter(images)
        chunks = []
        while items := [(i, self.per_image(image)) for i, image in enumerate(islice(images, batch_size))]:
            probs = np.zeros((len(items), len(self.categories)), dtype=np.float32)
            for indices, batch in same_size_groups(items):
                probs[indices] = self.probabilities(batch)
            chunks.append(probs)
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.categories)), dtype=np.float32)
