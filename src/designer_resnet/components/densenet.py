"""DenseNet: choose a DenseNet architecture -> UntrainedModelDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..models.create import create_and_report
from ..models.registry import DENSENETS, WEIGHT_CHOICES
from ._args import ComponentArgumentParser, boolean


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="densenet", description=__doc__)
    p.add_argument("--model_name", choices=DENSENETS, default="densenet201", help="default densenet201")
    p.add_argument("--pretrained", type=boolean, default=True, metavar="BOOL", help="start from ImageNet weights (default True)")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="DEFAULT", help="which ImageNet weights (default DEFAULT)")
    p.add_argument("--memory_efficient", type=boolean, default=False, metavar="BOOL",
                   help="checkpoint activations: less memory, slower (default False)")
    p.add_argument("--weights_file", default=None, help="optional: a .pth file (or folder with one) of the ImageNet weights, for offline use")
    p.add_argument("--output_path", required=True, help="new or empty folder for the UntrainedModelDirectory")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    params = {"model_name": args.model_name, "pretrained": args.pretrained, "weights": args.weights,
              "memory_efficient": args.memory_efficient}
    create_and_report(params, args.output_path, args.weights_file)


if __name__ == "__main__":
    sys.exit(run_entry(main))
