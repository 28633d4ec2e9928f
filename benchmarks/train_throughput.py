"""Train PyTorch Model vs a plain PyTorch loop: training images/s, same run.

The plain loop trains on tensors already in memory (no decoding, no
augmentation); ours reads the ImageDirectory through its DataLoader, as a
pipeline does. Same images, model, batch size and optimizer (SGD, Nesterov
momentum 0.9, weight decay 1e-4). Both figures are the mean over the epochs
after the first (warm-up); the two are measured alternately `--repeats` times
and the medians compared, since a shared CPU drifts. Target: ours ÷ plain ≥ 0.9 on CPU.

`--from-jpeg` trains ours from JPEG photos (loader_throughput.py's, ImageNet-like
shapes scaled to `--size`) through the whole input pipeline, as a designer
pipeline does: Convert to Image Directory, Apply Image Transformation "For
training" with RandomResizedCrop(size) + RandomHorizontalFlip (files kept as
they are, the crop and flip drawn by the loader each epoch) and, for validation,
"For inference" with Resize + CenterCrop. The plain loop gets the same photos
resized to size×size in memory. `--jpeg-decode`, `--workers` and `--precision`
are Train PyTorch Model's parameters (the plain loop follows `--precision`).

    .venv/bin/python benchmarks/train_throughput.py                       # CPU: resnet18, 32×32
    .venv/bin/python benchmarks/train_throughput.py --model resnet50 --size 224 --images 2048 --batch-size 64   # on a GPU
    .venv/bin/python benchmarks/train_throughput.py --from-jpeg           # CPU: resnet18, photos cropped to 32
    .venv/bin/python benchmarks/train_throughput.py --from-jpeg --model resnet50 --size 224 --images 2048 \
        --batch-size 64 --jpeg-decode device                              # on a GPU: nvJPEG
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from loader_throughput import apply_ops, crop_flip, make_photos  # noqa: E402

from designer_resnet.compute import Compute  # noqa: E402
from designer_resnet.data.convert import convert_to_image_directory  # noqa: E402
from designer_resnet.models.create import create_untrained_model  # noqa: E402
from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model  # noqa: E402
from designer_resnet.training.train import TrainConfig, train  # noqa: E402


def make_images(root: Path, count: int, size: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def load_tensors(root: Path, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images under `root/<class>/` as normalised tensors and class indices; resized to size×size if given."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    xs, ys = [], []
    for label, folder in enumerate(sorted(root.iterdir())):
        for file in sorted(folder.iterdir()):
            image = Image.open(file).convert("RGB")
            array = np.asarray(image.resize((size, size)) if size else image, dtype=np.float32) / 255
            xs.append((torch.from_numpy(array).permute(2, 0, 1) - mean) / std)
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def plain_loop(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, compute: Compute) -> float:
    """Images/s of a hand-written loop over in-memory tensors; `compute` gives only its bf16 and channels_last choice."""
    torch.manual_seed(0)
    device = compute.device
    model = build_model(name, int(y.max()) + 1).to(device)
    amp, cuda = compute.bf16, device.type == "cuda"
    if compute.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x, y = x.to(device), y.to(device)
    speeds = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=device)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        speeds.append(len(x) / (time.perf_counter() - start))
    return float(np.mean(speeds[1:]))


def prepare(tmp: Path, args) -> tuple[torch.Tensor, torch.Tensor]:
    """`tmp/train`, `tmp/valid` and `tmp/untrained` for ours; the in-memory (images, labels) for the plain loop."""
    create_untrained_model(tmp / "untrained", {"model_name": args.model, "pretrained": False})
    if not args.from_jpeg:
        make_images(tmp / "raw", args.images, args.size)
        convert_to_image_directory(tmp / "raw", tmp / "train")
        convert_to_image_directory(tmp / "raw", tmp / "valid")
        return load_tensors(tmp / "raw")
    make_photos(tmp / "raw", args.images, args.size)
    convert_to_image_directory(tmp / "raw", tmp / "converted")
    apply_ops(tmp / "converted", tmp / "train", crop_flip(args.size), "For training")
    apply_ops(tmp / "converted", tmp / "valid", [["Resize", args.size], ["CenterCrop", args.size]], "For inference")
    return load_tensors(tmp / "raw", args.size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--from-jpeg", action="store_true", help="ours trains from JPEG photos through the whole loader")
    p.add_argument("--jpeg-decode", default=TrainConfig.jpeg_decode, help="Train PyTorch Model's jpeg_decode")
    p.add_argument("--workers", type=int, default=TrainConfig.workers, help="loader workers (default: chosen)")
    p.add_argument("--precision", default=TrainConfig.precision, help="Train PyTorch Model's precision")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compute = Compute.resolve(device, precision=args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, y = prepare(tmp, args)
        plains, ourses = [], []
        for r in range(args.repeats):
            plains.append(plain_loop(args.model, x, y, args.epochs, args.batch_size, compute))
            result = train(tmp / "untrained", tmp / "train", tmp / "valid", tmp / f"out{r}",
                           TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1,
                                       print_frequency=10**6, precision=args.precision,
                                       jpeg_decode=args.jpeg_decode, workers=args.workers))
            ourses.append(float(np.mean([h.images_per_second for h in result.history[1:]])))
        plain, ours = float(np.median(plains)), float(np.median(ourses))
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"{args.model} {args.size}x{args.size}, {args.images} images, batch {args.batch_size}, {args.epochs} epochs, "
          f"{compute.describe()}")
    if args.from_jpeg:
        print(f"ours from JPEG photos: Convert, Apply 'For training' RandomResizedCrop {args.size} + flip; "
              f"jpeg_decode {args.jpeg_decode}, workers {'chosen' if args.workers is None else args.workers}; "
              f"plain: the photos resized to {args.size}x{args.size} in memory")
    print(f"plain PyTorch (in-memory tensors): {plain:8.1f} images/s  (median of {', '.join(f'{v:.0f}' for v in plains)})")
    print(f"Train PyTorch Model:               {ours:8.1f} images/s  (median of {', '.join(f'{v:.0f}' for v in ourses)})")
    print(f"ratio ours / plain: {ours / plain:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
