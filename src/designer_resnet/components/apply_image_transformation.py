"""Apply Image Transformation: TransformationDirectory + ImageDirectory -> transformed ImageDirectory."""

from __future__ import annotations

import json
import sys

from ..component_source import parse
from ..errors import run_entry
from ..transforms.apply import apply_image_transformation
from ._report import warn_skipped

NAME = "apply_image_transformation"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    ports = args.ports
    report = apply_image_transformation(ports["input_transformation_path"], ports["input_image_path"],
                                        ports["output_path"], **args.params)
    warn_skipped(report.skipped, "image id")
    print(f"wrote {report.written} images to {ports['output_path']}; applied {json.dumps(report.applied)}; "
          f"deferred to read time {json.dumps(report.deferred)}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
