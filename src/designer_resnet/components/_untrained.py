"""The body ResNet and DenseNet share: their parameters -> UntrainedModelDirectory."""

from __future__ import annotations

from ..component_source import parse
from ..models.create import create_untrained_model


def create_from_command_line(name: str, argv) -> None:
    """Parse the component's command line, write the folder, say what was written."""
    args = parse(name, argv)
    params, output = args.params, args.ports["output_path"]
    used = create_untrained_model(output, params, weights_file=args.ports["weights_file"])
    source = f" with ImageNet weights from {used}" if used else " (random initialisation)"
    print(f"wrote untrained {params['model_name']}{source} to {output}")
