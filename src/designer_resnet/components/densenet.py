"""DenseNet: choose a DenseNet architecture -> UntrainedModelDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..models.create import add_common_arguments, create_and_report
from ..models.registry import DENSENETS
from ._args import ComponentArgumentParser, boolean


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="densenet", description=__doc__)
    add_common_arguments(p, DENSENETS, "densenet201")
    p.add_argument("--memory_efficient", type=boolean, default=False, metavar="BOOL",
                   help="checkpoint activations: less memory, slower (default False)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    params = {"model_name": args.model_name, "pretrained": args.pretrained, "weights": args.weights,
              "memory_efficient": args.memory_efficient}
    create_and_report(params, args.output_path, args.weights_file)


if __name__ == "__main__":
    sys.exit(run_entry(main))
