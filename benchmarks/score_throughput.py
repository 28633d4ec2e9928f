"""Score Image Model vs plain PyTorch inference loops: images/s, same run.

Baselines, same model, images and batch size:
- plain, reading files: a Dataset that opens each image with PIL, a DataLoader,
  and the model under inference mode: what a hand-written scoring script does.
  Scoring has to read the images, so this is the like-for-like figure (target
  ours ÷ plain ≥ 0.9 on CPU);
- plain, in-memory tensors: the images decoded beforehand, forward passes only.
  Scoring cannot avoid decoding, so this only bounds what decoding costs.
Runs alternate `--repeats` times; medians are compared.

    .venv/bin/python benchmarks/score_throughput.py
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
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import load_tensors, make_images  # noqa: E402

from designer_resnet.data.convert import convert_to_image_directory  # noqa: E402
from designer_resnet.directories.image_directory import ImageDirectory  # noqa: E402
from designer_resnet.models.create import create_untrained_model  # noqa: E402
from designer_resnet.models.model_directory import read_trained  # noqa: E402
from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from designer_resnet.scoring.score import predict  # noqa: E402
from designer_resnet.training.train import TrainConfig, train  # noqa: E402


class Files(Dataset):
    def __init__(self, paths):
        self.paths = paths
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        array = np.asarray(Image.open(self.paths[i]).convert("RGB"), dtype=np.float32) / 255
        return (torch.from_numpy(array).permute(2, 0, 1) - self.mean) / self.std


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "raw", args.images, args.size)
        convert_to_image_directory(tmp / "raw", tmp / "images")
        create_untrained_model(tmp / "untrained", {"model_name": args.model, "pretrained": False})
        train(tmp / "untrained", tmp / "images", tmp / "images", tmp / "model",
              TrainConfig(epochs=1, batch_size=args.batch_size, print_frequency=10**6))
        model = read_trained(tmp / "model")
        directory = ImageDirectory.load(tmp / "images")
        net = model.model.eval()
        paths = [directory.image_path(r) for r in directory.rows]
        x, _ = load_tensors(tmp / "raw")

        def plain_files():
            with torch.inference_mode():
                for batch in DataLoader(Files(paths), batch_size=args.batch_size):
                    torch.softmax(net(batch), dim=1)

        def plain_memory():
            with torch.inference_mode():
                for i in range(0, len(x), args.batch_size):
                    torch.softmax(net(x[i:i + args.batch_size]), dim=1)

        def ours():
            predict(model, directory, batch_size=args.batch_size)

        times = {"files": [], "memory": [], "ours": []}
        plain_files()  # warm-up
        for _ in range(args.repeats):
            times["files"].append(timed(plain_files))
            times["memory"].append(timed(plain_memory))
            times["ours"].append(timed(ours))
    speed = {k: args.images / float(np.median(v)) for k, v in times.items()}
    print(f"{args.model} {args.size}x{args.size}, {args.images} images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print(f"plain loop reading files:        {speed['files']:8.1f} images/s")
    print(f"plain loop, in-memory tensors:   {speed['memory']:8.1f} images/s")
    print(f"Score Image Model:               {speed['ours']:8.1f} images/s")
    print(f"ratio ours / plain (files):  {speed['ours'] / speed['files']:.3f}  (target >= 0.9)")
    print(f"ratio ours / plain (memory): {speed['ours'] / speed['memory']:.3f}  (decoding included in ours only)")


if __name__ == "__main__":
    main()
