"""The training Dataset: ImageDirectory rows as (normalised tensor, class index) pairs.

Beside ImageDataset, what it needs: the checks a user's sets must pass before
a run (check_datasets), the op lists each set is read with (transforms_for),
and batches that carry a worker's one-line error (LoadFailure, collate, batches).
"""

from __future__ import annotations

import logging
import random
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..directories.image_directory import ImageDirectory
from ..errors import UserError
from ..transforms.ledger import Ledger
from ..transforms.ops import RANDOM_OPS, ImageTooLarge, fixes_size, tensor_pipeline, without_random

log = logging.getLogger(__name__)

# The side images are resized to when the sets hold several sizes and no op fixes one (torchvision's input size).
DEFAULT_INPUT_SIZE = 224


# Decoded tensors are kept in memory up to this many bytes (see ImageDataset.enable_cache).
CACHE_BUDGET = 2 * 1024**3


class LoadFailure:
    """A user error met while loading a batch, carried as the batch itself.

    A DataLoader worker's exception reaches the main process as a new exception
    holding the worker's traceback as its message; a failure passed as data
    keeps its one line. `batches` raises it in the main process.
    """

    def __init__(self, message: str):
        self.message = message


def collate(items: list):
    """default_collate, passing a LoadFailure through and naming sizes that cannot be stacked."""
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    shapes = sorted({tuple(tensor.shape) for tensor, _ in items})
    if len(shapes) > 1:
        sizes = " and ".join(f"{s[-1]}x{s[-2]}" for s in shapes[:2])
        return LoadFailure(f"images of different sizes ({sizes}) reached one batch after their transforms; add a "
                           "Resize or a crop with Init Image Transformation, or rebuild the sets with Convert to "
                           "Image Directory")
    return default_collate(items)


def batches(loader):
    """The loader's batches; a LoadFailure becomes the UserError it stands for."""
    for batch in loader:
        if isinstance(batch, LoadFailure):
            raise UserError(batch.message)
        yield batch


class ImageDataset(Dataset):
    """(tensor, class index) pairs, decoding one image per item.

    `raw_size` is the (width, height) every file is expected to have, when the
    transforms rely on it (one size and no op that fixes it): a file of another
    size is named rather than failing the batch it lands in.
    """

    def __init__(self, directory: ImageDirectory, ops: list, class_index: dict[str, int],
                 raw_size: tuple[int, int] | None = None):
        self.directory = directory
        self.rows = directory.rows
        self.ops = ops
        self.raw_size = tuple(raw_size) if raw_size else None
        self.transform = tensor_pipeline(ops)
        self.targets = [class_index[directory.label(r)] for r in self.rows]
        self._cache: dict[int, object] | None = None
        self.random = any(op[0] in RANDOM_OPS for op in ops)
        # The epoch's augmentation seed, in shared memory so persistent loader workers see each new value.
        self._epoch_seed = torch.full((1,), -1, dtype=torch.int64).share_memory_()

    def set_epoch_seed(self, seed: int) -> None:
        """Random ops draw from (seed, index) from now on: the same images whatever the workers or the resume point."""
        self._epoch_seed[0] = int(seed) % 2**63

    def __len__(self) -> int:
        return len(self.rows)

    def _open(self, i: int):
        """The i-th image; an unreadable file is one line naming its row (UnreadableImage; Convert skips such files)."""
        row = self.rows[i]
        image = self.directory.open_image(row)
        if self.raw_size and image.size != self.raw_size:
            raise UserError(f"{self.directory.row_name(row)} "
                            f"is {image.size[0]}x{image.size[1]}, but the rows say {self.raw_size[0]}x"
                            f"{self.raw_size[1]}; rebuild the set with Convert to Image Directory, which records "
                            "each file's size")
        return image

    def _transform(self, i: int, image):
        """The i-th item's tensor; an image its ops would enlarge past the pixel limit is one line naming its row."""
        try:
            return self.transform(image)
        except ImageTooLarge as exc:
            raise UserError(f"{self.directory.row_name(self.rows[i])}: {exc}") from None

    def __getitems__(self, indices: list[int]) -> list:
        """What a DataLoader fetches: a user error becomes a LoadFailure item (see LoadFailure)."""
        try:
            return [self[i] for i in indices]
        except UserError as exc:
            return [LoadFailure(str(exc))]

    def __getitem__(self, i: int):
        if self._cache is not None:
            tensor = self._cache.get(i)
            if tensor is None:
                tensor = self._cache[i] = self._transform(i, self._open(i))
            return tensor, self.targets[i]
        image = self._open(i)
        seed = int(self._epoch_seed[0]) if self.random else -1
        if seed < 0:
            return self._transform(i, image), self.targets[i]
        item_seed = np.random.SeedSequence([seed, i]).generate_state(2, np.uint32)
        torch_state, py_state = torch.get_rng_state(), random.getstate()
        try:
            torch.manual_seed((int(item_seed[0]) << 32) | int(item_seed[1]))
            random.seed(int(item_seed[0]))
            return self._transform(i, image), self.targets[i]
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)

    def enable_cache(self, budget: int = CACHE_BUDGET) -> bool:
        """Keep decoded tensors after first use, when that is safe and fits.

        Only for pipelines with no random op (every epoch would see the same
        tensor anyway) and in-process loading (workers would each keep a copy).
        Saves decoding every image every epoch, which matters on CPU.
        """
        if any(op[0] in RANDOM_OPS for op in self.ops) or not self.rows:
            return False
        first = self._transform(0, self._open(0))
        if first.numel() * first.element_size() * len(self.rows) > budget:
            return False
        self._cache = {0: first}
        return True


# How many file headers are read to check the sizes the rows claim (header reads only, no decode).
SIZE_SAMPLE = 64


def image_sizes(directory: ImageDirectory) -> set[tuple[int, int]]:
    """Distinct (width, height) of the files.

    The rows' width/height are used when every row has them and the headers of
    an evenly spread sample of files agree; otherwise every file's header is read.
    """
    rows = directory.rows
    listed = []
    for row in rows:
        info = row.get(directory.image_ref) or {}
        listed.append((info["width"], info["height"]) if "width" in info and "height" in info else None)
    if rows and all(size is not None for size in listed):
        step = max(1, len(rows) // SIZE_SAMPLE)
        if all(directory.image_size(rows[i]) == listed[i] for i in range(0, len(rows), step)):
            return set(listed)
        log.warning("%s: the rows' width/height do not match the image files; reading every file's size",
                    directory.input_name)
    return {directory.image_size(row) for row in rows}


def _size_fix(pending: list, valid: ImageDirectory, train_sizes: set) -> tuple[list, tuple | None]:
    """(ops, raw size): a Resize to the model's input size when image sizes differ and nothing fixes them.

    `pending` is both sets' pending ops. The designer crashes on mixed sizes; we
    resize with a warning instead. The raw size is the one size every file must
    then have (None when an op fixes it).
    """
    if fixes_size(pending):
        return [], None
    sizes = train_sizes | image_sizes(valid)
    if len(sizes) <= 1:
        return [], next(iter(sizes), None)
    log.warning("images have %d different sizes and no crop fixes them; resizing all to %dx%d "
                "(use Init/Apply Image Transformation to choose)", len(sizes), DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    return [["Resize", [[DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE]]]], None


def check_datasets(train: ImageDirectory, valid: ImageDirectory, batch_size: int) -> None:
    """The errors a user can cause with the data, each as one clear line."""
    for name, d in (("training_data", train), ("validation_data", valid)):
        if not d.labelled:
            raise UserError(f"{name}: the images have no labels; Convert to Image Directory labels a folder's "
                            "images by class sub-folder only when every image is in one (root/<class>/<image>): "
                            "move or delete any image at the folder's top level and convert it again")
        # One stat per file now, rather than a failure in the middle of an epoch.
        missing = [r for r in d.rows if not d.image_path(r).is_file()]
        if missing:
            raise UserError(f"{name}: {len(missing)} listed image file(s) are missing, the first "
                            f"{d.relative_path(missing[0])} (row id {missing[0].get('id')}); rebuild the set with "
                            "Convert to Image Directory")
    valid_labels = {valid.label(r) for r in valid.rows}
    unknown = sorted(valid_labels - set(train.categories))
    if unknown:
        raise UserError(f"validation_data: classes {', '.join(map(repr, unknown[:5]))} are not in the training data's "
                        f"classes ({', '.join(train.categories[:10])}); split both sets from the same labelled data")
    present = {train.label(r) for r in train.rows}
    if len(present) < 2:
        raise UserError(f"training_data: has images of {len(present)} class; classification needs at least 2")
    if batch_size > len(train):
        raise UserError(f"batch_size: {batch_size} is larger than the training set ({len(train)} images); "
                        f"use a batch size of at most {len(train)}")


class Transforms(NamedTuple):
    train_ops: list
    valid_ops: list
    preprocess: dict  # the model's pre-processing from a raw image (Ledger.inference_chain), with mean and std
    raw_size: tuple[int, int] | None  # the size every file must have (ImageDataset's raw_size)


def transforms_for(train: ImageDirectory, valid: ImageDirectory, mean: list, std: list) -> Transforms:
    """Op lists for training and validation, and what the trained model records to score a raw image."""
    normalize = [["Normalize", {"mean": mean, "std": std}]]
    train_ledger, valid_ledger = Ledger(train.extension), Ledger(valid.extension)
    sizes = image_sizes(train)
    resize, raw_size = _size_fix(train_ledger.pending + valid_ledger.pending, valid, sizes)
    train_ops = resize + train_ledger.pending + normalize
    valid_ops = resize + without_random(valid_ledger.pending) + normalize
    preprocess = train_ledger.inference_chain(resize, next(iter(sizes)) if len(sizes) == 1 else None)
    return Transforms(train_ops, valid_ops, {**preprocess, "mean": list(mean), "std": list(std)}, raw_size)
