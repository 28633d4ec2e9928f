"""Split Image Directory: seeded, stratified split into two ImageDirectories."""

from __future__ import annotations

import sys

from ..component_source import parse
from ..data.split import split_image_directory
from ..errors import run_entry

NAME = "split_image_directory"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    ports, params = args.ports, args.params
    n1, n2 = split_image_directory(ports["input_path"], ports["output_path1"], ports["output_path2"],
                                   fraction=params["fraction"], seed=params["random_seed"])
    print(f"wrote {n1} images to {ports['output_path1']} and {n2} images to {ports['output_path2']}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
