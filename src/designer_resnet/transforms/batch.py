"""The input pipeline's batch stage: what happens on the device after a batch is copied there.

Loader workers hand over uint8 images, 4x fewer bytes than float through
collate, shared memory and pinning; normalising a batch on the device is one
vectorised step. On the device-decode path they hand over JPEG bytes with the
crop box and flips already drawn, and the batch is decoded on the device
(nvJPEG on CUDA), cropped and flipped there.

`uint8_split` says whether an op list can run that way; `normalize` is
bit-for-bit torchvision's ToTensor then Normalize; `DecodePlan` draws and
applies the geometry of a crop-and-flip chain.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

from .ops import TENSOR_OPS, build_op


class Uint8Split(NamedTuple):
    image_ops: list  # ops on the PIL image, run in the worker; PILToTensor follows them
    mean: list | None  # the trailing Normalize's, applied to the batch on the device (None: no Normalize)
    std: list | None


def uint8_split(ops: list) -> Uint8Split | None:
    """Split ops into image ops and a trailing ToTensor/Normalize, when that is their whole shape.

    None when a tensor op must act per image (RandomErasing, a Normalize that
    is not last): those items stay float and are normalised in the worker.
    """
    tail = len(ops)
    while tail and ops[tail - 1][0] in ("ToTensor", "Normalize"):
        tail -= 1
    image_ops, finish = ops[:tail], ops[tail:]
    if any(op[0] in TENSOR_OPS for op in image_ops):
        return None
    normalizes = [op for op in finish if op[0] == "Normalize"]
    if len(normalizes) > 1:
        return None
    if not normalizes:
        return Uint8Split(list(image_ops), None, None)
    norm = build_op(*normalizes[0])
    return Uint8Split(list(image_ops), list(norm.mean), list(norm.std))


def normalize(batch: torch.Tensor, mean: list | None, std: list | None) -> torch.Tensor:
    """uint8 images (N, C, H, W) as floats in [0, 1], normalised: bit-for-bit ToTensor then Normalize per image.

    A float batch is returned as it is (its items were normalised per image).
    """
    if batch.dtype != torch.uint8:
        return batch
    out = batch.to(torch.float32).div_(255)
    if mean is None:
        return out
    shape = (1, -1, 1, 1)
    return out.sub_(torch.as_tensor(mean, dtype=out.dtype, device=out.device).view(shape)).div_(
        torch.as_tensor(std, dtype=out.dtype, device=out.device).view(shape))


# --- decoding on the device ------------------------------------------------------------------------------------------

# The ops a decode plan reproduces: at most one RandomResizedCrop, first, then flips (Init Image Transformation's
# training augmentations once Apply has written the deterministic ops into the files).
DECODABLE_MODES = ("RGB", "L")  # JPEG colour modes nvJPEG decodes as the CPU path does (not CMYK)


@dataclass(frozen=True)
class Geometry:
    """One image's drawn geometry: the crop box (top, left, height, width; None: whole image) and flips."""

    box: tuple[int, int, int, int] | None
    hflip: bool
    vflip: bool


class DecodePlan:
    """A chain of [RandomResizedCrop] + flips, split into draws (in the worker) and pixels (on the device).

    `draw` consumes torch's global RNG exactly as the torchvision transforms do
    for the same image size, so under the same per-item seed the crop box and
    flips are the CPU path's.
    """

    def __init__(self, ops: list):
        self.ops = [list(op) for op in ops]
        self.crop: T.RandomResizedCrop | None = None
        self.flips: list[tuple[str, float]] = []
        for name, args in ops:
            transform = build_op(name, args)
            if name == "RandomResizedCrop":
                self.crop = transform
            else:
                self.flips.append((name, float(transform.p)))

    @staticmethod
    def unsupported(ops: list) -> str | None:
        """Why the ops cannot be decoded on the device (None when they can)."""
        for i, (name, args) in enumerate(ops):
            if name == "RandomResizedCrop" and i == 0:
                crop = build_op(name, args)
                if crop.interpolation != InterpolationMode.BILINEAR or crop.antialias is False:
                    return "its RandomResizedCrop uses another interpolation than bilinear with antialias"
            elif name not in ("RandomHorizontalFlip", "RandomVerticalFlip"):
                return (f"{name} is not one of the ops decoded on the device (a first RandomResizedCrop, "
                        "then RandomHorizontalFlip/RandomVerticalFlip)")
        return None

    @property
    def size(self) -> tuple[int, int] | None:
        """The (height, width) every image leaves with, or None when it keeps its own."""
        return tuple(self.crop.size) if self.crop is not None else None

    def draw(self, image) -> Geometry:
        """The geometry for one image (a PIL image, opened for its header only), from torch's global RNG."""
        box = tuple(int(v) for v in self.crop.get_params(image, self.crop.scale, self.crop.ratio)) \
            if self.crop is not None else None
        hflip = vflip = False
        for name, p in self.flips:
            if torch.rand(1) < p:
                if name == "RandomHorizontalFlip":
                    hflip = not hflip
                else:
                    vflip = not vflip
        return Geometry(box, hflip, vflip)

    def apply(self, image: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """A decoded uint8 (C, H, W) image cropped, resized and flipped as drawn, on its own device."""
        if geometry.box is not None:
            top, left, height, width = geometry.box
            image = F.resized_crop(image, top, left, height, width, list(self.crop.size),
                                   InterpolationMode.BILINEAR, antialias=True)
        if geometry.hflip:
            image = image.flip(-1)
        if geometry.vflip:
            image = image.flip(-2)
        return image


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG files' bytes (1-D uint8 CPU tensors) decoded as RGB uint8 (C, H, W) on `device`, in one batched call.

    torchvision's decoder (nvJPEG on CUDA, libjpeg-turbo on CPU). torchvision
    0.29 marks its image codecs deprecated in favour of TorchCodec, whose
    `decode_jpeg` takes the same arguments; it is used when torchvision's is gone.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - a torchvision without image codecs
        from torchcodec.decoders import decode_jpeg

        return decode_jpeg(list(data), mode="RGB", device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device)
