"""Convert to Image Directory: a folder or archive of images, or labelled JSON Lines / MLTable -> ImageDirectory."""

from __future__ import annotations

import sys

from ..component_source import parse
from ..data.convert import convert_to_image_directory
from ..errors import run_entry
from ._report import warn_skipped

NAME = "convert_to_image_directory"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    ports = args.ports
    report = convert_to_image_directory(ports["input_path"], ports["output_path"],
                                        datastore_path=ports["datastore_path"], **args.params)
    warn_skipped(report.skipped, "file")
    kind = f"labelled, {len(report.categories)} classes" if report.labelled else "unlabelled"
    print(f"wrote {report.written} images ({kind}) to {ports['output_path']}; skipped {len(report.skipped)} file(s)")


if __name__ == "__main__":
    sys.exit(run_entry(main))
