"""The local demo: sample digits -> Convert to Image Directory -> Split Image Directory."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .data.convert import convert_to_image_directory
from .data.sample import write_digits
from .data.split import split_image_directory


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="designer-resnet demo", description=__doc__)
    p.add_argument("--runs-dir", default="runs", help="parent folder of the demo's run folder (default: runs)")
    args = p.parse_args(argv)
    run = Path(args.runs_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    start = time.perf_counter()
    n = write_digits(run / "sample_digits")
    print(f"[1/3] wrote {n} sample digit images (scikit-learn digits, 32x32) to {run / 'sample_digits'}")
    report = convert_to_image_directory(run / "sample_digits", run / "convert_to_image_directory")
    print(f"[2/3] Convert to Image Directory: {report.written} images, {len(report.categories or [])} classes "
          f"-> {run / 'convert_to_image_directory'}")
    n1, n2 = split_image_directory(run / "convert_to_image_directory", run / "split" / "train", run / "split" / "validation",
                                   fraction=0.8, seed=42)
    print(f"[3/3] Split Image Directory (0.8, stratified): {n1} train -> {run / 'split' / 'train'}, "
          f"{n2} validation -> {run / 'split' / 'validation'}")
    print(f"done in {time.perf_counter() - start:.1f}s; outputs under {run.resolve()}")
    print("training, scoring and evaluation join this demo as those components land (see README)")
