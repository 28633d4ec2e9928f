"""Apply Image Transformation: TransformationDirectory + ImageDirectory -> ImageDirectory."""

from __future__ import annotations

import json
import sys

from ..errors import run_entry
from ..transforms.apply import MODES, apply_image_transformation
from ._args import ComponentArgumentParser, int_in
from ._report import warn_skipped


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(
        prog="apply_image_transformation",
        description="Apply an image transformation. 'For inference' applies only the deterministic ops. "
        "'For training' writes the deterministic ops into the images and records the random ones so that "
        "training re-draws them every epoch.",
    )
    p.add_argument("--input_transformation_path", required=True, help="TransformationDirectory from Init Image Transformation")
    p.add_argument("--input_image_path", required=True, help="the ImageDirectory to transform")
    p.add_argument("--mode", choices=list(MODES), default="For inference", help="default 'For inference'")
    p.add_argument("--output_path", required=True, help="new or empty folder for the transformed ImageDirectory")
    p.add_argument("--workers", type=int_in(1, 256), default=None, help="parallel threads (default: 2 per CPU, at most 16)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    report = apply_image_transformation(args.input_transformation_path, args.input_image_path, args.output_path,
                                        mode=args.mode, workers=args.workers)
    warn_skipped(report.skipped, "image id")
    print(f"wrote {report.written} images to {args.output_path}; applied {json.dumps(report.applied)}; "
          f"deferred to read time {json.dumps(report.deferred)}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
