"""Score Image Model: trained ModelDirectory + ImageDirectory -> scored DataFrameDirectory."""

from __future__ import annotations

import sys

from ..component_source import parse
from ..errors import run_entry
from ..scoring.score import score_image_model
from ._report import warn_skipped

NAME = "score_image_model"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    ports = args.ports
    report = score_image_model(ports["trained_model"], ports["dataset"], ports["scored_dataset"], **args.params)
    warn_skipped(report.failed, "image id")
    print(f"scored {report.scored} images ({len(report.failed)} unreadable) -> {ports['scored_dataset']}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
