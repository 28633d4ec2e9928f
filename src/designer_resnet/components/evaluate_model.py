"""Evaluate Model: scored DataFrameDirectory (and optionally a second) -> metrics DataFrameDirectory."""

from __future__ import annotations

import sys

from ..component_source import parse
from ..errors import run_entry
from ..evaluation.evaluate import DATASET_NAMES, evaluate_model

NAME = "evaluate_model"


def main(argv=None) -> None:
    ports = parse(NAME, argv).ports
    results = evaluate_model(ports["scored_dataset"], ports["evaluation_results"],
                             compare=ports["scored_dataset_to_compare"])
    for name, result in zip(DATASET_NAMES, results):
        o = result["overall"]
        print(f"{name}: accuracy {o['Overall Accuracy']:.4f}, macro F1 {o['Macro F1']:.4f}, "
              f"log loss {o['Log Loss']:.4f} ({o['Rows']} rows)")
    print(f"metrics, metrics.json and PNGs in {ports['evaluation_results']}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
