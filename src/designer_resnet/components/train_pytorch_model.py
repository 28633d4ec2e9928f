"""Train PyTorch Model: untrained model + labelled ImageDirectories -> ModelDirectory."""

from __future__ import annotations

import sys

from ..component_source import parse
from ..errors import run_entry
from ..training.train import TrainConfig, train

NAME = "train_pytorch_model"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    ports = args.ports
    result = train(ports["untrained_model"], ports["training_data"], ports["validation_data"], ports["trained_model"],
                   TrainConfig(**args.params), checkpoint_dir=ports["checkpoint_path"])
    if result.model is not None:  # rank 0
        best = result.history[result.best_epoch - 1]
        print(f"trained {len(result.history)} epoch(s); best validation top-1 {best.top1:.4f} at epoch {best.epoch}; "
              f"model in {ports['trained_model']}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
