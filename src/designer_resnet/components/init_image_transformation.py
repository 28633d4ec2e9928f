"""Init Image Transformation: the designer's parameters -> TransformationDirectory."""

from __future__ import annotations

import json
import sys

from ..directories import StagedOutput
from ..directories.transformation_directory import write_transformation_directory
from ..errors import run_entry
from ..transforms.ops import designer_ops, validate_ops
from ._args import ComponentArgumentParser, boolean, int_in

# (flag, default) and (size parameter, default, low, high), in the designer's order
SWITCHES = [
    ("resize", True, ("size", 256, 1, 8192)),
    ("center_crop", True, ("crop_size", 224, 1, 8192)),
    ("pad", False, ("padding", 0, 0, 4096)),
    ("color_jitter", False, None),
    ("grayscale", False, None),
    ("random_resized_crop", False, ("random_resized_crop_size", 256, 1, 8192)),
    ("random_crop", False, ("random_crop_size", 224, 1, 8192)),
    ("random_horizontal_flip", True, None),
    ("random_vertical_flip", False, None),
    ("random_rotation", False, ("random_rotation_degrees", 0, 0, 180)),
    ("random_affine", False, ("random_affine_degrees", 0, 0, 180)),
    ("random_grayscale", False, None),
    ("random_perspective", False, None),
    ("random_erasing", False, None),
]


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(
        prog="init_image_transformation",
        description="Choose image transformations (applied in the order listed) and write them as a TransformationDirectory.",
    )
    for flag, default, sized in SWITCHES:
        p.add_argument(f"--{flag}", type=boolean, default=default, metavar="BOOL", help=f"default {default}")
        if sized:
            name, value, low, high = sized
            p.add_argument(f"--{name}", type=int_in(low, high), default=value, help=f"default {value}, range [{low}, {high}]")
    p.add_argument("--output_path", required=True, help="new or empty folder for the TransformationDirectory")
    return p


def main(argv=None) -> None:
    args = vars(build_parser().parse_args(argv))
    output = args.pop("output_path")
    ops = validate_ops(designer_ops(**args), input_name="parameters")
    with StagedOutput(output, output_name="output_path") as stage:
        write_transformation_directory(stage.path, ops)
    print(f"wrote {len(ops)} transformation(s) to {output}: {json.dumps(ops)}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
