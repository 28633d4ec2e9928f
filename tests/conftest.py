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


def convert_train_valid(root: Path, train: int, valid: int, **set_args) -> Path:
    """ImageDirectories `root/train` and `root/valid`: Convert of write_labelled_set's `root/raw_train` (seed 0)
    and `root/raw_valid` (seed 1), with `train` and `valid` images per class; returns `root`."""
    from designer_resnet.data.convert import convert_to_image_directory

    write_labelled_set(root / "raw_train", train, seed=0, **set_args)
    write_labelled_set(root / "raw_valid", valid, seed=1, **set_args)
    convert_to_image_directory(root / "raw_train", root / "train")
    convert_to_image_directory(root / "raw_valid", root / "valid")
    return root


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def transformed_model(tmp_path_factory) -> Path:
    """A resnet18 trained (1 epoch) on Resize 40 / CenterCrop 32 files, and raw test photos of mixed sizes and formats.

    Layout: raw_test/<class>/*.png|jpg (raw, sizes 45x38 .. 64x48), test (Convert of raw_test),
    test_tf (Apply 'For inference' of test), model (the trained ModelDirectory).
    """
    from designer_resnet.data.convert import convert_to_image_directory
    from designer_resnet.directories.transformation_directory import write_transformation_directory
    from designer_resnet.models.create import create_untrained_model
    from designer_resnet.training.train import TrainConfig, train
    from designer_resnet.transforms.apply import apply_image_transformation
    from designer_resnet.transforms.ops import designer_ops

    root = tmp_path_factory.mktemp("transformed")
    write_labelled_set(root / "raw_train", 6, seed=0, sizes=[(48, 40), (60, 44), (40, 52)])
    write_labelled_set(root / "raw_test", 2, seed=1, sizes=[(45, 38), (64, 48)])
    for i, path in enumerate(sorted((root / "raw_test").rglob("*.png"))):
        if i % 2:  # half of them JPEG, as photos are
            Image.open(path).save(path.with_suffix(".jpg"), format="JPEG", quality=90)
            path.unlink()
    ops = designer_ops(size=40, crop_size=32, random_horizontal_flip=True)
    write_transformation_directory(root / "tf", ops)
    convert_to_image_directory(root / "raw_train", root / "train_raw")
    convert_to_image_directory(root / "raw_test", root / "test")
    apply_image_transformation(root / "tf", root / "train_raw", root / "train", mode="For training")
    apply_image_transformation(root / "tf", root / "test", root / "test_tf", mode="For inference")
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    train(root / "untrained", root / "train", root / "test_tf", root / "model",
          TrainConfig(epochs=1, batch_size=6, learning_rate=0.01, workers=0))
    return root


# CI and pytest markers with which MLflow keeps its telemetry off by itself: a test of ours must not rely on them.
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "JENKINS_URL", "BUILDKITE",
               "CIRCLECI", "TRAVIS")


def user_environment(home: Path) -> dict:
    """The environment of a user whose HOME is `home`: no MLflow, XDG or matplotlib settings, no CI markers."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "XDG_")) and k not in ("MPLCONFIGDIR", "DO_NOT_TRACK", *_CI_MARKERS)}
    env["HOME"] = str(home)
    return env
