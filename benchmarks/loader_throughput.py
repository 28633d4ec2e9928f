"""Train PyTorch Model's loader: images per CPU-second on one core, float items vs uint8 items vs undecoded JPEGs.

What the loader workers do per training image, on generated ImageNet-like JPEGs (500×375 and other camera
shapes, 0.19 MP on average, smooth gradients under blurred noise, quality 90) read through
RandomResizedCrop(size) + RandomHorizontalFlip + Normalize, collate into batches included. One process, one
thread, no DataLoader workers, CPU time (`time.process_time`): the figures are per core.
- before (the baseline): Train's item pipeline as it was before issue 16, in plain torchvision: Pillow
  decode and convert("RGB"), torch.manual_seed per item (its RNG state saved and restored),
  Compose(RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize), float items through default_collate;
- float: `ImageDataset(..., uint8=False)`, the path before issue 16: decode, crop, flip, ToTensor and
  Normalize per image;
- uint8: the default: decode, crop and flip; the batch is normalised on the device;
- JPEG bytes: `jpeg_decode` device (`decode=DecodePlan(...)`): the worker side only, reading the file and
  drawing its crop and flips; the batch is decoded on the device (nvJPEG on CUDA);
- float from PNG: the float path on PNG copies of the same images, the files the old Apply Image
  Transformation wrote;
- today's code: Train's ImageDataset as it was the day issue 16 was filed (commit 37cf428, taken from this
  repository's git history with `git archive`), timed in a child process on the same files between the other
  paths: the issue's "today's per-core rate". Skipped, and said so, where the history is not there;
- floor: Pillow's decode, crop and resize alone, nothing else (no flip, no tensor, no collate): the least work
  that gives Train's pixels, which the default path must keep (tests/test_fingerprint.py). uint8 ÷ floor says how
  close the default path is to it; floor ÷ before is the most any pixel-exact loader could gain.
The device side of uint8 and JPEG bytes (`device_batch`) is timed apart on this CPU: what a GPU would do.
The paths alternate `--repeats` times and each one's best pass is compared (interference only ever adds time). Target
(issue 16): uint8 ÷ today's code ≥ 1.5; uint8 ÷ before, against the leaner plain-torchvision rewrite, is printed too.

It also runs Apply Image Transformation "For training" with the crop and flip alone: nothing deterministic to
write, so every output file should be its input, byte for byte (the old Apply rewrote each as PNG, ~4x the bytes).

    .venv/bin/python benchmarks/loader_throughput.py
    .venv/bin/python benchmarks/loader_throughput.py --images 500 --repeats 7
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.directories.transformation_directory import write_transformation_directory
from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD
from designer_resnet.training.dataset import ImageDataset, LoadFailure, collate
from designer_resnet.transforms.apply import apply_image_transformation
from designer_resnet.transforms.batch import DecodePlan

# The last commit before issue 16: its Train item pipeline is the "today's per-core rate" the target is set against.
BEFORE_COMMIT = "37cf428"
REPO = Path(__file__).resolve().parents[1]

# Run in a child process with the old package first on sys.path: one pass of the old ImageDataset over a folder,
# timed after an untimed one.
OLD_PASS = """
import sys, time, json
from pathlib import Path
import torch
torch.set_num_threads(1)
import designer_resnet
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.training.dataset import ImageDataset, collate
old_src, folder, ops, batch, seed = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if not Path(designer_resnet.__file__).resolve().is_relative_to(Path(old_src).resolve()):
    raise SystemExit(f"the old package did not load: {designer_resnet.__file__}")
directory = ImageDirectory.load(folder)
dataset = ImageDataset(directory, ops, {c: i for i, c in enumerate(directory.categories)})

def one_pass(epoch_seed):
    dataset.set_epoch_seed(epoch_seed)
    t0 = time.process_time()
    for start in range(0, len(dataset), batch):
        collate(dataset.__getitems__(list(range(start, min(start + batch, len(dataset))))))
    return time.process_time() - t0

one_pass(seed + 1000)  # warm, as the paths timed in the benchmark's own process are: first calls, page cache
print(one_pass(seed))
"""

# (width, height) of the photos at --size 224, scaled with it: ImageNet's usual camera shapes, 0.19 MP on average.
SHAPES = [(500, 375)] * 6 + [(375, 500)] * 2 + [(500, 333), (500, 500)]


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour gradients and waves under blurred noise: decodes about as fast as a photo of its size."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    slopes = rng.uniform(-1, 1, (3, 3)) * [120, 120, 60]
    base = np.stack([128 + a * x + b * y + c * np.sin(0.05 * a * x + 4 * y) for a, b, c in slopes], -1)
    noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(1))
    return Image.fromarray(np.clip(base + 3 * (np.asarray(noise, np.float32) - 128), 0, 255).astype(np.uint8))


def make_photos(root: Path, count: int, size: int, classes: int = 10) -> None:
    """`count` JPEGs (quality 90) in ImageFolder layout, `root/c<k>/<i>.jpg`, shaped as SHAPES scaled by size/224."""
    rng = np.random.default_rng(0)
    for i in range(count):
        width, height = SHAPES[rng.integers(len(SHAPES))]
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        photo(rng, max(8, round(width * size / 224)), max(8, round(height * size / 224))).save(
            folder / f"{i:05d}.jpg", quality=90)


def crop_flip(size: int) -> list:
    """The training augmentations Apply leaves to the loader: nothing deterministic to write into the files."""
    return [["RandomResizedCrop", size], ["RandomHorizontalFlip", {}]]


def apply_ops(source: Path, out: Path, ops: list, mode: str) -> None:
    """Apply Image Transformation of `ops` to the ImageDirectory `source`, written to `out`."""
    write_transformation_directory(out.with_name(out.name + "_transform"), ops)
    apply_image_transformation(out.with_name(out.name + "_transform"), source, out, mode=mode)


def file_bytes(directory: ImageDirectory) -> dict:
    """Each row's file bytes, by row id."""
    return {row["id"]: directory.image_path(row).read_bytes() for row in directory.rows}


class BeforeIssue16:
    """The baseline: the loader's per-item work before issue 16, written as plain torchvision (see the docstring)."""

    def __init__(self, directory: ImageDirectory, size: int):
        self.paths = [directory.image_path(row) for row in directory.rows]
        self.targets = [directory.categories.index(directory.label(row)) for row in directory.rows]
        self.transform = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        self.seed = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch_seed(self, seed: int) -> None:
        self.seed = seed

    def __getitems__(self, indices: list[int]) -> list:
        items = []
        for i in indices:
            with Image.open(self.paths[i]) as image:
                image = image.convert("RGB")
            state = np.random.SeedSequence([self.seed, i]).generate_state(2, np.uint32)
            torch_state, py_state = torch.get_rng_state(), random.getstate()
            torch.manual_seed((int(state[0]) << 32) | int(state[1]))
            random.seed(int(state[0]))
            items.append((self.transform(image), self.targets[i]))
            torch.set_rng_state(torch_state)
            random.setstate(py_state)
        return items

    def device_batch(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        return images.to(device)


class PixelFloor(BeforeIssue16):
    """The floor: each item's file decoded, cropped and resized by Pillow as RandomResizedCrop draws, nothing more."""

    def __getitems__(self, indices: list[int]) -> list:
        crop = self.transform.transforms[0]
        images = []
        for i in indices:
            with Image.open(self.paths[i]) as image:
                image.load()
                top, left, height, width = crop.get_params(image, crop.scale, crop.ratio)
                images.append(image.crop((left, top, left + width, top + height)).resize(crop.size[::-1],
                                                                                         Image.BILINEAR))
        return images


def old_package(tmp: Path) -> Path | None:
    """`src/` of BEFORE_COMMIT unpacked under tmp, or None where this checkout has no such history."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_COMMIT, "src"], capture_output=True)
    if archive.returncode:
        return None
    out = tmp / "before_issue16"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    return out / "src"


class TodaysCode:
    """The old ImageDataset, one timed pass per child process (its import and a warm-up pass are not timed)."""

    def __init__(self, src: Path, folder: Path, ops: list):
        self.src, self.folder, self.ops = src, folder, ops

    def cpu_seconds(self, batch: int, seed: int) -> float:
        env = {**os.environ, "PYTHONPATH": str(self.src)}
        done = subprocess.run([sys.executable, "-c", OLD_PASS, str(self.src), str(self.folder),
                               json.dumps(self.ops), str(batch), str(seed)],
                              capture_output=True, text=True, env=env, timeout=600)
        if done.returncode:
            raise SystemExit(f"today's code ({BEFORE_COMMIT}) failed: {done.stderr.strip().splitlines()[-1:]}")
        return float(done.stdout.strip().splitlines()[-1])


def loader_pass(dataset: ImageDataset, batch: int, seed: int) -> tuple[float, float]:
    """CPU seconds (worker side: items and collate, device side: `device_batch` on the CPU) of one epoch.

    The device side runs after the epoch's batches, not between them: in training it runs in another process (on
    the GPU), and here its float batches would evict the worker side's data from this core's caches.
    """
    if isinstance(dataset, TodaysCode):
        return dataset.cpu_seconds(batch, seed), float("nan")
    dataset.set_epoch_seed(seed)
    if isinstance(dataset, PixelFloor):
        t0 = time.process_time()
        for start in range(0, len(dataset), batch):
            dataset.__getitems__(list(range(start, min(start + batch, len(dataset)))))
        return time.process_time() - t0, float("nan")
    batches = []
    cpu = torch.device("cpu")
    t0 = time.process_time()
    for start in range(0, len(dataset), batch):
        batches.append(collate(dataset.__getitems__(list(range(start, min(start + batch, len(dataset)))))))
    worker = time.process_time() - t0
    for collated in batches:
        if isinstance(collated, LoadFailure):
            raise SystemExit(collated.message)
    t0 = time.process_time()
    for collated in batches:
        dataset.device_batch(collated[0], cpu)
    return worker, time.process_time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=224, help="RandomResizedCrop's size; the photos scale with it")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-todays-code", action="store_true",
                   help=f"do not time the code of {BEFORE_COMMIT} (the target's reference) in a child process")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    ops = crop_flip(args.size) + [["Normalize", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_photos(tmp / "raw", args.images, args.size)
        for jpeg in (tmp / "raw").glob("*/*.jpg"):
            (tmp / "raw_png" / jpeg.parent.name).mkdir(parents=True, exist_ok=True)
            Image.open(jpeg).save(tmp / "raw_png" / jpeg.parent.name / (jpeg.stem + ".png"))
        convert_to_image_directory(tmp / "raw", tmp / "converted")
        convert_to_image_directory(tmp / "raw_png", tmp / "png")
        apply_ops(tmp / "converted", tmp / "applied", crop_flip(args.size), "For training")
        converted, applied, png = (ImageDirectory.load(tmp / name) for name in ("converted", "applied", "png"))
        inputs, outputs, pngs = file_bytes(converted), file_bytes(applied), file_bytes(png)
        pixels = [np.prod(Image.open(converted.image_path(row)).size) for row in converted.rows]
        classes = {c: i for i, c in enumerate(applied.categories)}
        paths = {"before": BeforeIssue16(applied, args.size),
                 "float": ImageDataset(applied, ops, classes, uint8=False),
                 "uint8": ImageDataset(applied, ops, classes),
                 "bytes": ImageDataset(applied, ops, classes, decode=DecodePlan(crop_flip(args.size))),
                 "png": ImageDataset(png, ops, {c: i for i, c in enumerate(png.categories)}, uint8=False),
                 "floor": PixelFloor(applied, args.size)}
        old_src = None if args.skip_todays_code else old_package(tmp)
        if old_src is not None:
            paths["today"] = TodaysCode(old_src, tmp / "applied", ops)
        worker = {name: [] for name in paths}
        device = {name: [] for name in paths}
        for r in range(args.repeats):
            names = list(paths)
            for name in names[r % len(names):] + names[:r % len(names)]:  # each path leads in turn
                w, d = loader_pass(paths[name], args.batch_size, r)
                worker[name].append(args.images / w)
                device[name].append(args.images / d)
    speed = {name: max(v) for name, v in worker.items()}
    on_device = {name: max(v) for name, v in device.items()}
    kept = sum(outputs.get(i) == data for i, data in inputs.items())

    def total(data: dict) -> int:
        return sum(len(v) for v in data.values())

    print(f"{args.images} JPEGs, mean {np.mean(pixels) / 1e6:.3f} MP, {total(inputs) / len(inputs) / 1024:.0f} KB "
          f"(quality 90); RandomResizedCrop {args.size} + flip + Normalize, batch {args.batch_size}, 1 thread, "
          f"best of {args.repeats}")
    print("loader worker side, images per CPU-second (reading, decoding, transforms, collate):")
    if "today" in speed:
        print(f"  today's code ({BEFORE_COMMIT}, float):            {speed['today']:10.1f}  (the target's reference)")
    else:
        print(f"  today's code ({BEFORE_COMMIT}): not timed (no git history here, or --skip-todays-code)")
    print(f"  before issue 16 (plain torchvision, float): {speed['before']:10.1f}  (the plain baseline)")
    print(f"  float items (uint8=False):                  {speed['float']:10.1f}")
    print(f"  uint8 items (default):                      {speed['uint8']:10.1f}")
    print(f"  JPEG bytes (jpeg_decode device):            {speed['bytes']:10.1f}  (worker side only: reading the "
          "file and drawing its crop and flips)")
    print(f"  float items from PNG copies (old Apply):    {speed['png']:10.1f}")
    print(f"  floor: Pillow decode + crop + resize alone: {speed['floor']:10.1f}  (the default path's pixels, no "
          "other work)")
    print("device side (device_batch), timed on this CPU: what the GPU would do, images per CPU-second:")
    print(f"  uint8 batch normalised:                     {on_device['uint8']:10.1f}")
    print(f"  JPEG batch decoded, cropped, flipped, normalised: {on_device['bytes']:10.1f}")
    if "today" in speed:
        print(f"ratio uint8 / today's code: {speed['uint8'] / speed['today']:.2f}  (target >= 1.5)")
    print(f"ratio uint8 / before: {speed['uint8'] / speed['before']:.2f}  (against the plain-torchvision rewrite)")
    print(f"ratio uint8 / floor: {speed['uint8'] / speed['floor']:.2f}  (1.00 would be no work beyond the pixels)")
    print(f"ratio floor / before: {speed['floor'] / speed['before']:.2f}  (the most a pixel-exact loader can gain)")
    print(f"ratio uint8 / float: {speed['uint8'] / speed['float']:.2f}  (the same reader: what uint8 items save)")
    print(f"ratio JPEG bytes / before: {speed['bytes'] / speed['before']:.1f}  (worker side only; the decode is the "
          "device's)")
    print(f"ratio float from PNG / before: {speed['png'] / speed['before']:.2f}")
    print(f"Apply 'For training' (RandomResizedCrop + flip): {kept} of {len(inputs)} output files keep their input's "
          f"bytes: {'yes' if kept == len(inputs) == len(outputs) else 'NO'}; output / input bytes "
          f"{total(outputs) / total(inputs):.3f} (as PNG, the old Apply: {total(pngs) / total(inputs):.2f})")


if __name__ == "__main__":
    main()
