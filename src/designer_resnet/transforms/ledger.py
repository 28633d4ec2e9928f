"""The pre-processing ledger: what an image's journey from a raw file to a model input has done, and what it owes.

An ImageDirectory's `_meta.yaml` records under `extension.designer_resnet`:
  applied_transforms   ops written into its files since the raw images, in order
  pending_transforms   ops still to run whenever the images are read (random ones re-drawn each time)
  mode                 how Apply Image Transformation wrote them ('For training' or 'For inference')
Convert starts a set with nothing applied; Split keeps the ledger; Apply Image
Transformation appends what it writes into the files. A trained model records
its whole chain from a raw image (`Ledger.inference_chain`), so Score Image
Model and the served model apply exactly what their input still lacks
(`Ledger.ops_to_score`). The built-in modules ignore `extension`; a folder
without a ledger counts as raw images.
"""

from __future__ import annotations

import logging
from functools import cached_property

from ..directories.meta import EXTENSION_KEY
from .ops import fixes_size, validate_ops, without_random

log = logging.getLogger(__name__)

APPLIED_KEY = "applied_transforms"
PENDING_KEY = "pending_transforms"
MODE_KEY = "mode"


def _ours(extension) -> dict:
    ours = extension.get(EXTENSION_KEY) if isinstance(extension, dict) else None
    return ours if isinstance(ours, dict) else {}


class Ledger:
    """One ImageDirectory's ledger, read from its `extension`; each op list is validated once, when first used.

    Build one per folder and pass it on: every property and method below reads
    the cached lists, so no hop re-validates them (or re-constructs their
    torchvision objects). A list is validated only when used, so a folder whose
    applied ops nobody needs is not refused for them. The lists are shared:
    copy one before changing it.
    """

    def __init__(self, extension):
        self.extension = extension if isinstance(extension, dict) else {}
        self._ours = _ours(extension)

    @cached_property
    def applied(self) -> list[list]:
        """Ops the folder's files already hold, in order."""
        return self._validated(APPLIED_KEY)

    @cached_property
    def pending(self) -> list[list]:
        """Ops still to run whenever the images are read."""
        return self._validated(PENDING_KEY)

    @property
    def mode(self) -> str | None:
        mode = self._ours.get(MODE_KEY)
        return mode if isinstance(mode, str) else None

    def _validated(self, key: str) -> list[list]:
        ops = self._ours.get(key)
        return validate_ops(ops, input_name=f"ImageDirectory extension ({key})") if ops else []

    def extension_after(self, file_ops: list, deferred: list, mode: str | None = None) -> dict:
        """The extension of a copy whose files also hold `file_ops` and that owes `deferred` instead of `pending`.

        `deferred` replaces the pending ops (the caller planned them in); other
        keys, the built-ins' and ours, are kept.
        """
        out = {k: v for k, v in self.extension.items() if k != EXTENSION_KEY}
        ours = {k: v for k, v in self._ours.items() if k not in (APPLIED_KEY, PENDING_KEY, MODE_KEY)}
        applied = self.applied + list(file_ops)
        if applied:
            ours[APPLIED_KEY] = [list(op) for op in applied]
        if deferred:
            ours[PENDING_KEY] = [list(op) for op in deferred]
            if mode:
                ours[MODE_KEY] = mode
        if ours:
            out[EXTENSION_KEY] = ours
        return out

    def inference_chain(self, size_ops: list, train_size: tuple[int, int] | None) -> dict:
        """A model trained on this folder: its pre-processing from a raw image, {"transforms": chain, "from_training_data": n}.

        The chain is what the training files had applied, then the size fix
        training used (if any), then the pending ops without the random ones.
        When nothing in it fixes the size and every training image had one size
        (`train_size`, width and height), a Resize to that size ends it, so a
        photo of any size is scored at the size the model learned. The first
        `from_training_data` ops are the training files' own.
        """
        chain = self.applied + list(size_ops) + without_random(self.pending)
        if train_size is not None and not fixes_size(chain):
            width, height = train_size
            chain.append(["Resize", [[height, width]]])
        return {"transforms": chain, "from_training_data": len(self.applied)}

    def ops_to_score(self, preprocess: dict, *, input_name: str = "dataset") -> list[list]:
        """The model's chain (`preprocess`, as TrainedModel holds it) minus what this folder's files already hold.

        Normalisation is not included: it follows from the model's mean and std.
        """
        chain = [list(op) for op in preprocess.get("transforms") or []]
        baked = self.applied
        if chain[:len(baked)] == baked:
            return chain[len(baked):]
        # The data was prepared another way: trust its own pending ops, then the model's own part of the chain.
        log.warning("%s: its images were transformed with %s, which is not how the model's training images were "
                    "prepared (%s); scoring them as they are, plus their pending ops", input_name, baked, chain)
        return without_random(self.pending) + chain[int(preprocess.get("from_training_data", 0)):]
