"""Run a pipeline YAML locally: every node as a subprocess, outputs under runs/<run id>/<node>/."""

from __future__ import annotations

import sys

from ..errors import run_entry
from .run import parse_overrides, run_pipeline
from .sweep import DEFAULT_MAX_TRIALS
from ..arguments import ComponentArgumentParser, boolean, int_in


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="designer-resnet run", description=__doc__)
    p.add_argument("pipeline", help="pipeline YAML, e.g. pipelines/image_classification.yml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="inputs.NAME=VALUE",
                   help="override a pipeline input (repeatable); data inputs take a local folder")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--nproc", type=int_in(1, 1024), default=None,
                   help="processes for the distributed node (default: min(requested, local GPUs), 1 on CPU)")
    p.add_argument("--reuse", type=boolean, default=True, metavar="BOOL",
                   help="reuse nodes unchanged since a finished run (default True)")
    p.add_argument("--max-trials", type=int_in(1, 1000), default=DEFAULT_MAX_TRIALS, metavar="N",
                   help=f"trials a sweep node runs locally, at most (default {DEFAULT_MAX_TRIALS}; never more than "
                        "its limits.max_total_trials)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    result = run_pipeline(args.pipeline, parse_overrides(args.overrides), runs_dir=args.runs_dir,
                          nproc=args.nproc, reuse=args.reuse, max_trials=args.max_trials)
    print(f"done: outputs under {result.run_dir}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
