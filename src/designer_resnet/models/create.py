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


def add_common_arguments(parser, names: tuple[str, ...], default: str) -> None:
    """Arguments every model module has: architecture, pretrained, weights, weights file, output."""
    from ..components._args import boolean
    from .registry import WEIGHT_CHOICES

    parser.add_argument("--model_name", choices=names, default=default, help=f"default {default}")
    parser.add_argument("--pretrained", type=boolean, default=True, metavar="BOOL",
                        help="start from ImageNet weights (default True)")
    parser.add_argument("--weights", choices=WEIGHT_CHOICES, default="DEFAULT",
                        help="DEFAULT: torchvision's best ImageNet weights; IMAGENET1K_V1: the original ones the designer used")
    parser.add_argument("--weights_file", default=None,
                        help="optional: a .pth file (or folder with one) of the ImageNet weights, for offline use")
    parser.add_argument("--output_path", required=True, help="new or empty folder for the UntrainedModelDirectory")


def create_and_report(params: dict, output_path: str, weights_file: str | None) -> None:
    """Entry-module body shared by ResNet and DenseNet: create, then say what was written."""
    used = create_untrained_model(output_path, params, weights_file=weights_file)
    source = f" with ImageNet weights from {used}" if used else " (random initialisation)"
    print(f"wrote untrained {params['model_name']}{source} to {output_path}")
