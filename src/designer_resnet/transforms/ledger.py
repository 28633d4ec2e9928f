"""The pre-processing ledger: what an image's journey from a raw file to a model input has done, and what it owes.

An ImageDirectory's `_meta.yaml` records under `extension.designer_resnet`:
  applied_transforms   ops written into its files since the raw images, in order
  pending_transforms   ops still to run whenever the images are read (random ones re-drawn each time)
Convert starts a set with nothing applied; Split keeps the ledger; Apply Image
Transformation appends what it writes into the files. A trained model records
its whole chain from a raw image (`inference_chain`), so Score Image Model and
the served model apply exactly what their input still lacks (`ops_to_score`).
The built-in modules ignore `extension`; a folder without a ledger counts as raw
images.
"""

from __future__ import annotations

import logging

from ..directories.meta import EXTENSION_KEY
from .ops import RANDOM_OPS, fixes_size, validate_ops

log = logging.getLogger(__name__)

APPLIED_KEY = "applied_transforms"
PENDING_KEY = "pending_transforms"
MODE_KEY = "mode"


def _ours(extension) -> dict:
    ours = extension.get(EXTENSION_KEY) if isinstance(extension, dict) else None
    return ours if isinstance(ours, dict) else {}


def applied_ops(extension) -> list[list]:
    """Ops an ImageDirectory's files already hold."""
    applied = _ours(extension).get(APPLIED_KEY)
    return validate_ops(applied, input_name="ImageDirectory extension (applied_transforms)") if applied else []


def pending_ops(extension) -> list[list]:
    """Ops an ImageDirectory's `extension` says still have to run on read."""
    pending = _ours(extension).get(PENDING_KEY)
    return validate_ops(pending, input_name="ImageDirectory extension (pending_transforms)") if pending else []


def with_ledger(extension, applied: list, pending: list, mode: str | None = None) -> dict:
    """A copy of `extension` whose ledger says `applied` and `pending`; other keys (the built-ins', ours) kept."""
    out = {k: v for k, v in (extension or {}).items() if k != EXTENSION_KEY}
    ours = {k: v for k, v in _ours(extension).items() if k not in (APPLIED_KEY, PENDING_KEY, MODE_KEY)}
    if applied:
        ours[APPLIED_KEY] = [list(op) for op in applied]
    if pending:
        ours[PENDING_KEY] = [list(op) for op in pending]
        if mode:
            ours[MODE_KEY] = mode
    if ours:
        out[EXTENSION_KEY] = ours
    return out


def deterministic(ops: list) -> list:
    """The ops that belong to inference: everything but the random augmentations."""
    return [op for op in ops if op[0] not in RANDOM_OPS]


def inference_chain(train_extension, size_ops: list, train_size: tuple[int, int] | None) -> dict:
    """A trained model's pre-processing from a raw image: {"transforms": chain, "from_training_data": n}.

    The chain is what the training files had applied, then the size fix training
    used (if any), then the deterministic pending ops. When nothing in it fixes
    the size and every training image had one size, a Resize to that size ends
    it, so a photo of any size is scored at the size the model learned.
    The first `from_training_data` ops are the training files' own.
    """
    applied = applied_ops(train_extension)
    chain = applied + list(size_ops) + deterministic(pending_ops(train_extension))
    if train_size is not None and not fixes_size(chain):
        width, height = train_size
        chain.append(["Resize", [[height, width]]])
    return {"transforms": chain, "from_training_data": len(applied)}


def ops_to_score(preprocess: dict, extension, *, input_name: str = "dataset") -> list[list]:
    """The model's chain minus what the data's files already hold (normalisation follows)."""
    chain = [list(op) for op in preprocess.get("transforms") or []]
    baked = applied_ops(extension)
    if chain[:len(baked)] == baked:
        return chain[len(baked):]
    # The data was prepared another way: trust its own pending ops, then the model's own part of the chain.
    log.warning("%s: its images were transformed with %s, which is not how the model's training images were "
                "prepared (%s); scoring them as they are, plus their pending ops", input_name, baked, chain)
    return deterministic(pending_ops(extension)) + chain[int(preprocess.get("from_training_data", 0)):]
