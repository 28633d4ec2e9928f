"""Split Image Directory: seeded, stratified split into two ImageDirectories."""

from __future__ import annotations

import sys

from ..data.split import split_image_directory
from ..errors import run_entry
from ._args import ComponentArgumentParser, float_in, int_in


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(
        prog="split_image_directory",
        description="Split an ImageDirectory: a fraction of the images to the first output, the rest to the second; "
        "stratified by label when labelled, deterministic for a given seed.",
    )
    p.add_argument("--input_path", required=True, help="the ImageDirectory to split")
    p.add_argument("--fraction", type=float_in(0.0, 1.0), default=0.9,
                   help="fraction of images in the first output (default 0.9; each output needs at least one image)")
    p.add_argument("--random_seed", type=int_in(0, 2**32 - 1), default=42, help="seed of the shuffle (default 42)")
    p.add_argument("--output_path1", required=True, help="new or empty folder for the first output")
    p.add_argument("--output_path2", required=True, help="new or empty folder for the second output")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    n1, n2 = split_image_directory(args.input_path, args.output_path1, args.output_path2,
                                   fraction=args.fraction, seed=args.random_seed)
    print(f"wrote {n1} images to {args.output_path1} and {n2} images to {args.output_path2}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
