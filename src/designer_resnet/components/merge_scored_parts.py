"""Merge Scored Parts: the parts of a parallel Score Image Model run + their ImageDirectory -> scored DataFrameDirectory."""

from __future__ import annotations

import sys

from ..component_source import parse
from ..errors import run_entry
from ..scoring.parallel import merge_parts
from ._report import warn_skipped

NAME = "merge_scored_parts"


def main(argv=None) -> None:
    ports = parse(NAME, argv).ports
    report = merge_parts(ports["scored_parts"], ports["dataset"], ports["scored_dataset"])
    warn_skipped(report.failed, "image id")
    print(f"merged {report.scored} scored images ({len(report.failed)} unscored) -> {ports['scored_dataset']}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
