"""Init Image Transformation: the designer's parameters -> TransformationDirectory."""

from __future__ import annotations

import json
import sys

from ..component_source import parse
from ..directories import StagedOutput
from ..directories.transformation_directory import write_transformation_directory
from ..errors import run_entry
from ..transforms.ops import designer_ops, validate_ops

NAME = "init_image_transformation"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    output = args.ports["output_path"]
    ops = validate_ops(designer_ops(**args.params), input_name="parameters")
    with StagedOutput(output, output_name="output_path") as stage:
        write_transformation_directory(stage.path, ops)
    print(f"wrote {len(ops)} transformation(s) to {output}: {json.dumps(ops)}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
