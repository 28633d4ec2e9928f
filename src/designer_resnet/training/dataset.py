"""The training Dataset: ImageDirectory rows as (image, class index) pairs, and their batches on the device.

Items leave the loader workers as uint8 images (normalised per batch on the
device, `ImageDataset.device_batch`), as float tensors when a tensor op must
act per image, or as JPEG bytes with their drawn crop and flips when the batch
is decoded on the device (`DecodePlan`, the `jpeg_decode` parameter).

Beside ImageDataset, what it needs: the checks a user's sets must pass before
a run (check_datasets), the op lists each set is read with (transforms_for),
and batches that carry a worker's one-line error (LoadFailure, collate, batches).
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms as T
from torch.utils.data import Dataset, default_collate

from ..compute import choice
from ..directories.image_directory import ImageDirectory
from ..errors import UserError
from ..transforms.batch import DECODABLE_MODES, DecodePlan, Geometry, decode_jpegs, normalize, uint8_split
from ..transforms.ledger import Ledger
from ..transforms.ops import (
    RANDOM_OPS, ImageTooLarge, build_op, fixes_size, image_pipeline, tensor_pipeline, without_random)

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


@dataclass
class EncodedImage:
    """A JPEG file's bytes and the geometry drawn for it, decoded with its batch on the device."""

    index: int  # the dataset's row index, to name the file if it fails to decode
    data: torch.Tensor  # the file's bytes, 1-D uint8
    geometry: Geometry  # drawn for the header's size
    size: tuple[int, int]  # (width, height) in the header the geometry was drawn from


class EncodedBatch:
    """A batch still to be decoded: per position an EncodedImage, or a uint8 image decoded in the worker."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def pin_memory(self, device=None) -> "EncodedBatch":
        """What DataLoader's pinning thread calls: the worker-decoded images pinned (bytes are read by the decoder)."""
        return EncodedBatch([item if isinstance(item, EncodedImage) else item.pin_memory()
                             for item in self.items])


def collate(items: list):
    """default_collate, passing a LoadFailure through and naming sizes that cannot be stacked.

    uint8 items keep their channels-last memory (see _PILToTensor): the batch is
    stacked as (N, H, W, C), one plain copy per item, and handed over as an
    (N, C, H, W) view of it; `device_batch` lays it out for the network.
    """
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    if any(isinstance(image, EncodedImage) for image, _ in items):
        return EncodedBatch([image for image, _ in items]), default_collate([target for _, target in items])
    shapes = sorted({tuple(tensor.shape) for tensor, _ in items})
    if len(shapes) > 1:
        sizes = " and ".join(f"{s[-1]}x{s[-2]}" for s in shapes[:2])
        return LoadFailure(f"images of different sizes ({sizes}) reached one batch after their transforms; add a "
                           "Resize or a crop with Init Image Transformation, or rebuild the sets with Convert to "
                           "Image Directory")
    if all(tensor.dim() == 3 and tensor.permute(1, 2, 0).is_contiguous() for tensor, _ in items):
        images, targets = default_collate([(tensor.permute(1, 2, 0), target) for tensor, target in items])
        return [images.permute(0, 3, 1, 2), targets]
    return default_collate(items)


def batches(loader):
    """The loader's batches; a LoadFailure becomes the UserError it stands for."""
    for batch in loader:
        if isinstance(batch, LoadFailure):
            raise UserError(batch.message)
        yield batch


class ImageDataset(Dataset):
    """(image, class index) pairs, decoding one image per item (or none: see `decode`).

    `raw_size` is the (width, height) every file is expected to have, when the
    transforms rely on it (one size and no op that fixes it): a file of another
    size is named rather than failing the batch it lands in.

    Items are uint8 when the ops allow (image ops, then Normalize): the batch
    is normalised on the device by `device_batch`, bit-for-bit as ToTensor and
    Normalize would per image. `uint8=False` keeps float items, normalised in
    the worker. `decode`, a DecodePlan of the same ops, leaves JPEG files
    undecoded: the worker draws their crop and flips, `device_batch` decodes.
    """

    def __init__(self, directory: ImageDirectory, ops: list, class_index: dict[str, int],
                 raw_size: tuple[int, int] | None = None, *, uint8: bool = True, decode: DecodePlan | None = None):
        self.directory = directory
        self.rows = directory.rows
        self.ops = ops
        self.raw_size = tuple(raw_size) if raw_size else None
        split = uint8_split(ops) if uint8 or decode is not None else None
        if decode is not None and split is None:
            raise ValueError("a decode plan needs ops that end in image ops and Normalize")
        self.mean, self.std = (split.mean, split.std) if split else (None, None)
        self.transform = T.Compose([image_pipeline(split.image_ops), _PILToTensor()]) if split \
            else tensor_pipeline(ops)
        self.decode = decode
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

    def _check_size(self, i: int, size: tuple[int, int]) -> None:
        if self.raw_size and size != self.raw_size:
            raise UserError(f"{self.directory.row_name(self.rows[i])} "
                            f"is {size[0]}x{size[1]}, but the rows say {self.raw_size[0]}x"
                            f"{self.raw_size[1]}; rebuild the set with Convert to Image Directory, which records "
                            "each file's size")

    def _open(self, i: int):
        """The i-th image; an unreadable file is one line naming its row (UnreadableImage; Convert skips such files)."""
        image = self.directory.open_image(self.rows[i])
        self._check_size(i, image.size)
        return image

    def _transform(self, i: int, image):
        """The i-th item's tensor; an image its ops would enlarge past the pixel limit is one line naming its row."""
        try:
            return self.transform(image)
        except ImageTooLarge as exc:
            raise UserError(f"{self.directory.row_name(self.rows[i])}: {exc}") from None

    def _item(self, i: int):
        """The i-th image as the worker hands it over: bytes and geometry for a JPEG the device decodes, else pixels."""
        if self.decode is not None:
            header, data = self.directory.read_encoded(self.rows[i])
            if header.format == "JPEG" and header.mode in DECODABLE_MODES:
                self._check_size(i, header.size)
                return EncodedImage(i, torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                    self.decode.draw(header), header.size)
        return self._transform(i, self._open(i))

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
        seed = int(self._epoch_seed[0]) if self.random else -1
        if seed < 0:
            return self._item(i), self.targets[i]
        with _item_seed(seed, i):
            return self._item(i), self.targets[i]

    def device_batch(self, images, device: torch.device,
                     memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """A loader batch as the network's float input on `device`, in `memory_format`.

        Decoded there if encoded; laid out while still uint8 (a quarter of the
        bytes a float batch would move), then normalised there if uint8.
        """
        if isinstance(images, EncodedBatch):
            images = self._decode(images, device)
        else:
            images = images.to(device, non_blocking=True)
        return normalize(images.contiguous(memory_format=memory_format), self.mean, self.std)

    def _decode(self, batch: EncodedBatch, device: torch.device) -> torch.Tensor:
        """An EncodedBatch's images decoded in one call on `device`, cropped and flipped as drawn, stacked (uint8)."""
        encoded = [(k, item) for k, item in enumerate(batch.items) if isinstance(item, EncodedImage)]
        try:
            decoded = decode_jpegs([item.data for _, item in encoded], device)
        except RuntimeError:  # one bad file fails the batch: decode them one by one to name it
            decoded = [self._decode_one(item, device) for _, item in encoded]
        images = [item.to(device, non_blocking=True) if not isinstance(item, EncodedImage) else None
                  for item in batch.items]
        for (k, item), image in zip(encoded, decoded):
            if (image.shape[-1], image.shape[-2]) != item.size:  # the file changed since its header was read
                raise self.directory.unreadable(self.rows[item.index], ValueError(
                    f"decoded as {image.shape[-1]}x{image.shape[-2]}, its header said {item.size[0]}x{item.size[1]}"))
            images[k] = self.decode.apply(image, item.geometry)
        return torch.stack(images)

    def _decode_one(self, item: EncodedImage, device: torch.device) -> torch.Tensor:
        """One file decoded on `device`; a file the decoder refuses is one line naming its row (UnreadableImage)."""
        try:
            return decode_jpegs([item.data], device)[0]
        except RuntimeError as exc:
            raise self.directory.unreadable(self.rows[item.index], exc) from None

    def item_nbytes(self) -> int:
        """Bytes the first item takes between a worker and the training process (0 for an empty set)."""
        if not self.rows:
            return 0
        with _item_seed(0, 0):  # leaves the process's RNG as it was
            item = self._item(0)
        tensor = item.data if isinstance(item, EncodedImage) else item
        return tensor.numel() * tensor.element_size()

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


class _PILToTensor:
    """A PIL image as a uint8 (C, H, W) tensor: ToTensor's shape without its float conversion.

    The tensor is a view of the (H, W, C) pixels Pillow hands over, in one copy:
    channels-last memory, which `collate` stacks with one plain copy per item and
    a network in channels_last takes as it is (a permuted copy here cost more
    than the copy out of Pillow).
    """

    def __call__(self, image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image))  # one copy out of Pillow (measured 2x faster than pil_to_tensor)
        return pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)


@contextlib.contextmanager
def _item_seed(seed: int, i: int):
    """torch's and Python's global RNGs seeded from (epoch seed, item index) inside, restored after.

    Seeds the CPU generator alone (torch.manual_seed would seed every backend's,
    ~0.1 ms an item): the transforms draw from it only.
    """
    item_seed = np.random.SeedSequence([seed, i]).generate_state(2, np.uint32)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    try:
        torch.default_generator.manual_seed((int(item_seed[0]) << 32) | int(item_seed[1]))
        random.seed(int(item_seed[0]))
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(py_state)


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
    norm = [["Normalize", {"mean": mean, "std": std}]]
    train_ledger, valid_ledger = Ledger(train.extension), Ledger(valid.extension)
    sizes = image_sizes(train)
    resize, raw_size = _size_fix(train_ledger.pending + valid_ledger.pending, valid, sizes)
    train_ops = resize + train_ledger.pending
    valid_ops = resize + without_random(valid_ledger.pending)
    evaluation_fix = _evaluation_size_fix(train_ops, valid_ops, valid)
    preprocess = train_ledger.inference_chain(resize, next(iter(sizes)) if len(sizes) == 1 else None)
    if evaluation_fix and not fixes_size(preprocess["transforms"]):
        preprocess["transforms"] = preprocess["transforms"] + evaluation_fix  # scored as it was validated
    return Transforms(train_ops + norm, valid_ops + evaluation_fix + norm,
                      {**preprocess, "mean": list(mean), "std": list(std)}, raw_size)


def _evaluation_size_fix(train_ops: list, valid_ops: list, valid: ImageDirectory) -> list:
    """A Resize to the training crop's size for validation images of several sizes that only a random crop fixed.

    Training's random crop gives every image one size; evaluation drops random
    ops, so photos of mixed sizes would fail the first validation batch after
    a whole epoch. They are resized to the crop's size instead, with a warning.
    """
    if fixes_size(valid_ops):
        return []
    crops = [build_op(name, args) for name, args in train_ops if name in ("RandomResizedCrop", "RandomCrop")]
    if not crops or len(image_sizes(valid)) <= 1:
        return []
    height, width = crops[-1].size  # torchvision's (height, width)
    log.warning("validation_data: images of several sizes, which only the training's random crop makes one size; "
                "validating (and scoring) them resized to %dx%d", width, height)
    return [["Resize", [[height, width]]]]


# Train PyTorch Model's jpeg_decode values: on the device when training on CUDA, on the device, in the loader workers.
JPEG_DECODE = ("auto", "device", "workers")
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


def decode_plan(setting: str, ops: list, directory: ImageDirectory, device: torch.device) -> DecodePlan | None:
    """The DecodePlan for a training set read with `ops`, or None to decode in the loader workers.

    `auto` decodes on the device when it is a GPU, `device` on any device (a
    CPU too: the path the tests run), `workers` never. A set or op list the
    plan cannot serve is decoded in the workers, with the reason logged.
    """
    choice("jpeg_decode", setting, JPEG_DECODE)
    if setting == "workers" or (setting == "auto" and device.type != "cuda"):
        return None
    split = uint8_split(ops)
    why = ("a transformation acts on the image tensor (e.g. RandomErasing)" if split is None
           else DecodePlan.unsupported(split.image_ops))
    if why is None and not any(directory.image_path(row).suffix.lower() in JPEG_SUFFIXES for row in directory.rows):
        why = "the training set has no JPEG files"
    if why is not None:
        log.log(logging.WARNING if setting == "device" else logging.INFO,
                "jpeg_decode: images are decoded in the loader workers: %s", why)
        return None
    log.info("jpeg_decode: JPEG files are decoded in batches on %s; the loader workers only read them", device.type)
    return DecodePlan(split.image_ops)
