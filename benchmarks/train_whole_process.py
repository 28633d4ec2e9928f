"""Train PyTorch Model's whole process vs a plain PyTorch script's: wall time, start to exit.

train_throughput.py compares images/s inside the epochs; this one adds what
happens outside them: interpreter start, imports, reading the inputs, metrics,
writing the model folder (model file, MLflow model, curves) and the exit.

The same work on both sides: scikit-learn's digits at 32×32, split 80/20 by
Split Data's code; resnet18 from scratch with a 10-way head; SGD (momentum 0.9,
Nesterov, weight decay 1e-4, the learning rate decaying to 0), batch 16,
3 epochs, in-process loading, each image decoded once, the validation set
evaluated after every epoch, the weights saved at the end. Ours is

    python -m designer_resnet.components.train_pytorch_model ...

as a pipeline runs it (no MLFLOW_TRACKING_URI: the local path); the plain one
is a script written to a temporary file and run as its own process, so both
pay the interpreter start and the imports. The two alternate `--repeats` times
(the order swapping each round) and the medians are compared, since a shared
CPU drifts. Target: plain ÷ ours ≥ 0.9.

    .venv/bin/python benchmarks/train_whole_process.py
    .venv/bin/python benchmarks/train_whole_process.py --repeats 5 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLAIN_SCRIPT = '''\
"""A plain PyTorch training script: the same work as Train PyTorch Model, by hand."""
import json
import sys

import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

manifest, out, epochs, batch, lr, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
sets = json.load(open(manifest))
to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def load(items):
    images = []
    for path, _ in items:
        with Image.open(path) as img:
            images.append(to_tensor(img.convert("RGB")))
    return TensorDataset(torch.stack(images), torch.tensor([label for _, label in items]))


torch.manual_seed(seed)
train_set, valid_set = load(sets["train"]), load(sets["valid"])
model = torchvision.models.resnet18()
model.fc = nn.Linear(model.fc.in_features, sets["classes"])
generator = torch.Generator().manual_seed(seed)
train_loader = DataLoader(train_set, batch, shuffle=True, generator=generator)
valid_loader = DataLoader(valid_set, batch)
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
total = epochs * len(train_loader)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total) ** 0.9)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(1, epochs + 1):
    model.train()
    for images, targets in train_loader:
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    correct = seen = 0
    valid_loss = 0.0
    with torch.no_grad():
        for images, targets in valid_loader:
            logits = model(images)
            valid_loss += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
    print(f"epoch {epoch}: valid loss {valid_loss / seen:.4f} top-1 {correct / seen:.4f}")
torch.save(model.state_dict(), out)
'''


def prepare(root: Path, size: int) -> dict:
    """Digits as ImageDirectories (ours) and the same files as a (path, label) list (plain)."""
    from designer_resnet.data.convert import convert_to_image_directory
    from designer_resnet.data.sample import write_digits
    from designer_resnet.data.split import split_image_directory
    from designer_resnet.directories.image_directory import ImageDirectory
    from designer_resnet.models.create import create_untrained_model

    write_digits(root / "digits", size=size)
    convert_to_image_directory(root / "digits", root / "all")
    split_image_directory(root / "all", root / "train", root / "valid", fraction=0.8, seed=42)
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    train = ImageDirectory.load(root / "train")
    valid = ImageDirectory.load(root / "valid")
    index = {c: i for i, c in enumerate(train.categories)}
    manifest = {"classes": len(index),
                "train": [[str(train.image_path(r)), index[train.label(r)]] for r in train.rows],
                "valid": [[str(valid.image_path(r)), index[valid.label(r)]] for r in valid.rows]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "plain_train.py").write_text(PLAIN_SCRIPT)
    return manifest


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {shlex.join(cmd)}\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32, help="image edge in pixels (default 32)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    python = sys.executable
    # The local path: no tracking server, whatever the calling shell has set.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    with tempfile.TemporaryDirectory(prefix="train-whole-process-") as tmp:
        root = Path(tmp)
        manifest = prepare(root, args.size)
        ours_cmd = [python, "-m", "designer_resnet.components.train_pytorch_model",
                    "--untrained_model", str(root / "untrained"), "--training_data", str(root / "train"),
                    "--validation_data", str(root / "valid"), "--epochs", str(args.epochs),
                    "--batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
                    "--random_seed", str(args.seed), "--patience", str(args.epochs + 1), "--workers", "0",
                    "--trained_model", str(root / "ours")]
        plain_cmd = [python, str(root / "plain_train.py"), str(root / "manifest.json"), str(root / "plain.pt"),
                     str(args.epochs), str(args.batch_size), str(args.learning_rate), str(args.seed)]
        print(f"digits {args.size}x{args.size}: {len(manifest['train'])} training, {len(manifest['valid'])} validation "
              f"images; resnet18 from scratch, batch {args.batch_size}, {args.epochs} epochs, lr {args.learning_rate}, "
              f"0 loader workers, {os.cpu_count()} CPUs")
        print("ours: ", shlex.join(ours_cmd))
        print("plain:", shlex.join(plain_cmd), f"  (script: {__file__}, PLAIN_SCRIPT)")
        plains, ourses = [], []
        for r in range(args.repeats):
            for side in (("plain", "ours") if r % 2 == 0 else ("ours", "plain")):
                shutil.rmtree(root / "ours", ignore_errors=True)
                if side == "plain":
                    plains.append(timed(plain_cmd, root, env))
                else:
                    ourses.append(timed(ours_cmd, root, env))
                print(f"  round {r + 1} {side:5s} {(plains if side == 'plain' else ourses)[-1]:6.1f} s", flush=True)
    plain, ours = float(np.median(plains)), float(np.median(ourses))
    print(f"plain PyTorch script:      {plain:6.1f} s  (median of {', '.join(f'{v:.1f}' for v in plains)})")
    print(f"Train PyTorch Model:       {ours:6.1f} s  (median of {', '.join(f'{v:.1f}' for v in ourses)})")
    print(f"ratio plain / ours: {plain / ours:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
