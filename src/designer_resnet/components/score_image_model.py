"""Score Image Model: trained ModelDirectory + ImageDirectory -> scored DataFrameDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..scoring.score import score_image_model
from ._args import ComponentArgumentParser, int_in
from ._report import warn_skipped


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="score_image_model", description=__doc__)
    p.add_argument("--trained_model", required=True, help="ModelDirectory from Train PyTorch Model")
    p.add_argument("--dataset", required=True, help="ImageDirectory to score, labelled or not")
    p.add_argument("--batch_size", type=int_in(1, 65536), default=64, help="images per inference batch (default 64)")
    p.add_argument("--workers", type=int_in(0, 64), default=None, help="data loader processes (default: sized to the CPUs)")
    p.add_argument("--scored_dataset", required=True, help="new or empty folder for the scored DataFrameDirectory")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    report = score_image_model(args.trained_model, args.dataset, args.scored_dataset,
                               batch_size=args.batch_size, workers=args.workers)
    warn_skipped(report.failed, "image id")
    print(f"scored {report.scored} images ({len(report.failed)} unreadable) -> {args.scored_dataset}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
