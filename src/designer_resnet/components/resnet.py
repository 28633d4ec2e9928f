"""ResNet: choose a ResNet/ResNeXt/Wide ResNet architecture -> UntrainedModelDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..models.create import add_common_arguments, create_and_report
from ..models.registry import RESNETS
from ._args import ComponentArgumentParser, boolean


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="resnet", description=__doc__)
    add_common_arguments(p, RESNETS, "resnext101_32x8d")
    p.add_argument("--zero_init_residual", type=boolean, default=False, metavar="BOOL",
                   help="zero-initialise the last batch norm of each residual branch (default False)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    params = {"model_name": args.model_name, "pretrained": args.pretrained, "weights": args.weights,
              "zero_init_residual": args.zero_init_residual}
    create_and_report(params, args.output_path, args.weights_file)


if __name__ == "__main__":
    sys.exit(run_entry(main))
