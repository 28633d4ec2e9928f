"""Train PyTorch Model vs a plain PyTorch loop: training images/s, same run.

The plain loop trains on tensors already in memory (no decoding, no
augmentation); ours reads the ImageDirectory through its DataLoader, as a
pipeline does. Same images, model, batch size and optimizer (SGD, Nesterov
momentum 0.9, weight decay 1e-4). Both figures are the mean over the epochs
after the first (warm-up); the two are measured alternately `--repeats` times
and the medians compared, since a shared CPU drifts. Target: ours ÷ plain ≥ 0.9 on CPU.

    .venv/bin/python benchmarks/train_throughput.py                       # CPU: resnet18, 32×32
    .venv/bin/python benchmarks/train_throughput.py --model resnet50 --size 224 --images 2048 --batch-size 64   # on a GPU
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model
from designer_resnet.training.train import TrainConfig, train


def make_images(root: Path, count: int, size: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def load_tensors(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    xs, ys = [], []
    for label, folder in enumerate(sorted(root.iterdir())):
        for file in sorted(folder.iterdir()):
            array = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255
            xs.append((torch.from_numpy(array).permute(2, 0, 1) - mean) / std)
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def plain_loop(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(name, int(y.max()) + 1).to(device)
    amp = device.type == "cuda"
    if amp:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x, y = x.to(device), y.to(device)
    speeds = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=device)
        if amp:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if amp:
            torch.cuda.synchronize()
        speeds.append(len(x) / (time.perf_counter() - start))
    return float(np.mean(speeds[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "raw", args.images, args.size)
        convert_to_image_directory(tmp / "raw", tmp / "train")
        convert_to_image_directory(tmp / "raw", tmp / "valid")
        create_untrained_model(tmp / "untrained", {"model_name": args.model, "pretrained": False})
        x, y = load_tensors(tmp / "raw")
        plains, ourses = [], []
        for r in range(args.repeats):
            plains.append(plain_loop(args.model, x, y, args.epochs, args.batch_size, device))
            result = train(tmp / "untrained", tmp / "train", tmp / "valid", tmp / f"out{r}",
                           TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1,
                                       print_frequency=10**6))
            ourses.append(float(np.mean([h.images_per_second for h in result.history[1:]])))
        plain, ours = float(np.median(plains)), float(np.median(ourses))
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"{args.model} {args.size}x{args.size}, {args.images} images, batch {args.batch_size}, {args.epochs} epochs")
    print(f"plain PyTorch (in-memory tensors): {plain:8.1f} images/s  (median of {', '.join(f'{v:.0f}' for v in plains)})")
    print(f"Train PyTorch Model:               {ours:8.1f} images/s  (median of {', '.join(f'{v:.0f}' for v in ourses)})")
    print(f"ratio ours / plain: {ours / plain:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
