"""ResNet: choose a ResNet/ResNeXt/Wide ResNet architecture -> UntrainedModelDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..models.create import create_and_report
from ..models.registry import RESNETS, WEIGHT_CHOICES
from ._args import ComponentArgumentParser, boolean


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="resnet", description=__doc__)
    p.add_argument("--model_name", choices=RESNETS, default="resnext101_32x8d", help="default resnext101_32x8d")
    p.add_argument("--pretrained", type=boolean, default=True, metavar="BOOL", help="start from ImageNet weights (default True)")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="DEFAULT",
                   help="DEFAULT: torchvision's best ImageNet weights; IMAGENET1K_V1: the original ones the designer used")
    p.add_argument("--zero_init_residual", type=boolean, default=False, metavar="BOOL",
                   help="zero-initialise the last batch norm of each residual branch (default False)")
    p.add_argument("--weights_file", default=None, help="optional: a .pth file (or folder with one) of the ImageNet weights, for offline use")
    p.add_argument("--output_path", required=True, help="new or empty folder for the UntrainedModelDirectory")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    params = {"model_name": args.model_name, "pretrained": args.pretrained, "weights": args.weights,
              "zero_init_residual": args.zero_init_residual}
    create_and_report(params, args.output_path, args.weights_file)


if __name__ == "__main__":
    sys.exit(run_entry(main))
