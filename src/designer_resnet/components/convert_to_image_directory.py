"""Convert to Image Directory: a folder or archive of images -> ImageDirectory."""

from __future__ import annotations

import sys

from ..data.archives import DEFAULT_MAX_EXTRACTED_GB
from ..data.convert import convert_to_image_directory
from ..errors import run_entry
from ._args import ComponentArgumentParser, float_in, int_in
from ._report import warn_skipped


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(
        prog="convert_to_image_directory",
        description="Convert a folder or archive (.zip .tar .tar.gz .tgz .gz .bz2) of images into an ImageDirectory. "
        "Class sub-folders (root/<class>/<image>) give a labelled set; loose images give an unlabelled one.",
    )
    p.add_argument("--input_path", required=True, help="folder of images, an archive, or a folder holding one archive")
    p.add_argument("--output_path", required=True, help="new or empty folder for the ImageDirectory")
    p.add_argument("--workers", type=int_in(1, 256), default=None, help="parallel copy threads (default: 2 per CPU, at most 16)")
    p.add_argument("--max_extracted_gb", type=float_in(0.000001, 1_000_000), default=DEFAULT_MAX_EXTRACTED_GB,
                   help=f"most GiB an archive may extract to (default {DEFAULT_MAX_EXTRACTED_GB}); raise it for larger data")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    report = convert_to_image_directory(args.input_path, args.output_path, workers=args.workers,
                                        max_extracted_gb=args.max_extracted_gb)
    warn_skipped(report.skipped, "file")
    kind = f"labelled, {len(report.categories)} classes" if report.labelled else "unlabelled"
    print(f"wrote {report.written} images ({kind}) to {args.output_path}; skipped {len(report.skipped)} file(s)")


if __name__ == "__main__":
    sys.exit(run_entry(main))
