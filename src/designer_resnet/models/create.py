"""The ResNet and DenseNet modules: settings (and resolved weights) -> UntrainedModelDirectory."""

from __future__ import annotations

from pathlib import Path

from ..directories import StagedOutput
from .model_directory import write_untrained
from .registry import family_of, resolve_weights


def create_untrained_model(output_dir: str | Path, init_params: dict, *, weights_file: str | Path | None = None) -> Path | None:
    """Write an UntrainedModelDirectory; returns the weights file used, if pretrained.

    Pretrained weights are resolved and checked against the architecture now,
    so a missing or wrong file fails here rather than an hour into training.
    """
    family_of(init_params["model_name"])
    weights = None
    if init_params.get("pretrained"):
        weights = resolve_weights(init_params["model_name"], init_params.get("weights", "DEFAULT"), weights_file)
    with StagedOutput(output_dir, output_name="output_path") as stage:
        write_untrained(stage.path, init_params, weights)
    return weights
