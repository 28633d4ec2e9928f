"""Fixtures that build their own small images (a few KB each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# azure-ai-ml loads the v2 specs without the private flag; the typed ones are checked in a subprocess
# that sets it (tests/spec_probe.py), so nothing here may depend on it.
os.environ.pop("AZURE_ML_INTERNAL_COMPONENTS_ENABLED", None)

COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}


NOISY_BASE = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]  # one colour per class, plus noise


def write_labelled_set(root: Path, per_class: int, size=(32, 32), seed=0, classes=("a", "b", "c"), sizes=None):
    """ImageFolder layout of noisy solid-colour PNGs, one colour per class (learnable in one epoch)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        base = np.array(NOISY_BASE[c % 3], dtype=float)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)] if sizes else size
            pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def make_image(path: Path, size=(20, 16), color=(128, 64, 32), fmt=None) -> Path:
    """Write a small solid-colour image with a bright corner (so flips are visible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    img.putpixel((0, 0), (255, 255, 255))
    img.save(path, format=fmt)
    return path


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    """ImageFolder layout: 3 classes × 4 images, PNG and JPEG mixed."""
    root = tmp_path / "labelled"
    for name, color in COLORS.items():
        for i in range(4):
            suffix = ".png" if i % 2 == 0 else ".JPG"
            make_image(root / name / f"{name}{i}{suffix}", color=color, fmt="PNG" if suffix == ".png" else "JPEG")
    return root


@pytest.fixture
def flat_folder(tmp_path) -> Path:
    """Five loose images in two nested folders: an unlabelled set."""
    root = tmp_path / "flat"
    for i in range(3):
        make_image(root / f"img{i}.png")
    for i in range(2):
        make_image(root / "more" / f"x{i}.jpeg", fmt="JPEG")
    make_image(root / "top.bmp", fmt="BMP")
    return root


def run_module(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m designer_resnet.components.<module>` as a user would."""
    return subprocess.run([sys.executable, "-m", f"designer_resnet.components.{module}", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}
