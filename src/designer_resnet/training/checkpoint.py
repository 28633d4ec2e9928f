"""Checkpoint files of a training run: written atomically, continued only by the same run.

A run's identity is everything that decides its weights: the training
parameters (all but NOT_IDENTITY), the world size, the untrained model and a
fingerprint of both datasets. A checkpoint made under another identity is
refused with one line naming the first difference. What a checkpoint holds is
TrainingState's to say (training/state.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..component_source import default, parameters
from ..directories.image_directory import ImageDirectory
from ..errors import UserError
from .distributed import DistInfo
from .recipe import OPTIONS as RECIPE_OPTIONS
from .state import TrainingState

CHECKPOINT = "checkpoint.pt"
# Training parameters that do not change the trained weights: a checkpoint made with other values may continue.
# `epochs` may grow, to train a finished run further (the learning-rate decay is then stretched to the new end).
# How the device computes (layout, compilation, where JPEGs are decoded) changes weights only in rounding.
NOT_IDENTITY = ("epochs", "print_frequency", "workers", "memory_format", "compile", "jpeg_decode")
_SPEC = "train_pytorch_model"


def save_checkpoint(path: Path, state: dict) -> None:
    """Write through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a broken checkpoint


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _data_fingerprint(directory: ImageDirectory) -> str:
    """Rows (ids, labels, file names), classes, pending ops, and each file's size: cheap, no image is read."""
    sizes = []
    for row in directory.rows:
        try:
            sizes.append(directory.image_path(row).stat().st_size)
        except (OSError, UserError):
            sizes.append(None)  # the loader reports a missing file itself
    return _digest([directory.rows, directory.categories, directory.label_column, directory.image_ref,
                    directory.extension, sizes])


def run_identity(config: dict, info: DistInfo, untrained, train_dir: ImageDirectory,
                 valid_dir: ImageDirectory) -> dict:
    """Everything that decides the trained weights; a checkpoint continues only a run with the same identity."""
    weights = untrained.weights_path
    return {**{k: v for k, v in config.items() if k not in NOT_IDENTITY},
            "world_size": info.world_size,
            "untrained_model": _digest([untrained.family, untrained.init_params,
                                        weights.stat().st_size if weights is not None else None,
                                        *([untrained.lineage[0]["weights_sha256"]] if untrained.lineage else [])]),
            "training_data": _data_fingerprint(train_dir),
            "validation_data": _data_fingerprint(valid_dir)}


def _difference(made: dict, now: dict) -> str | None:
    """The first thing that differs between two run identities, in words."""
    for key, value in now.items():
        if made.get(key) == value:
            continue
        if key == "untrained_model":
            return "another untrained_model (other model_name or parameters, or another trained model continued)"
        if key in ("training_data", "validation_data"):
            return f"other {key} (images, labels or files differ)"
        return f"{key} {made.get(key)}, not {value}" if key in made else f"no {key}"
    return None


def load_checkpoint(folder: Path | None, identity: dict) -> dict | None:
    """The checkpoint in `folder`, if any, when it was made by a run with this identity; else one line."""
    if folder is None or not (folder / CHECKPOINT).is_file():
        return None
    try:
        ckpt = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint_path: {CHECKPOINT} in {folder} cannot be read ({exc.__class__.__name__}); "
                        "give an empty checkpoint folder to start over") from None
    made = TrainingState.identity_in(ckpt)
    if made is None:
        raise UserError(f"checkpoint_path: the checkpoint in {folder} was made by an older version that did not "
                        "record its run; give an empty checkpoint folder to start over")
    # A parameter added since the checkpoint was made is not held against it: that version had no choice. It
    # trained the designer's recipe, so a recipe option it lacks is read as its default: a resume that asks for
    # another value is refused like any other difference.
    made = {**{k: default(_SPEC, k) if k in RECIPE_OPTIONS else identity[k]
               for k in identity if k not in made and k in parameters(_SPEC)}, **made}
    differs = _difference(made, identity)
    if differs:
        raise UserError(f"checkpoint_path: the checkpoint in {folder} was made with {differs}; "
                        "give an empty checkpoint folder to start over")
    problem = TrainingState.schema_problem(ckpt)
    if problem:
        raise UserError(f"checkpoint_path: the checkpoint in {folder} {problem}; "
                        "give an empty checkpoint folder to start over")
    return ckpt
