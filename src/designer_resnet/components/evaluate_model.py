"""Evaluate Model: scored DataFrameDirectory (and optionally a second) -> metrics DataFrameDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..evaluation.evaluate import DATASET_NAMES, evaluate_model
from ._args import ComponentArgumentParser


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="evaluate_model", description=__doc__)
    p.add_argument("--scored_dataset", required=True, help="scored data from Score Image Model (labelled)")
    p.add_argument("--scored_dataset_to_compare", default=None, help="optional second scored data, evaluated side by side")
    p.add_argument("--evaluation_results", required=True, help="new or empty folder for the metrics")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    results = evaluate_model(args.scored_dataset, args.evaluation_results, compare=args.scored_dataset_to_compare)
    for name, result in zip(DATASET_NAMES, results):
        o = result["overall"]
        print(f"{name}: accuracy {o['Overall Accuracy']:.4f}, macro F1 {o['Macro F1']:.4f}, "
              f"log loss {o['Log Loss']:.4f} ({o['Rows']} rows)")
    print(f"metrics, metrics.json and PNGs in {args.evaluation_results}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
