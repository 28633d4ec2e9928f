"""Train PyTorch Model: untrained model + labelled ImageDirectories -> ModelDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ..training.train import TrainConfig, train
from ._args import ComponentArgumentParser, boolean, float_in, int_in


def build_parser() -> ComponentArgumentParser:
    p = ComponentArgumentParser(prog="train_pytorch_model", description=__doc__)
    p.add_argument("--untrained_model", required=True, help="UntrainedModelDirectory from ResNet or DenseNet")
    p.add_argument("--training_data", required=True, help="labelled ImageDirectory to train on")
    p.add_argument("--validation_data", required=True, help="labelled ImageDirectory to pick the best epoch with")
    p.add_argument("--epochs", type=int_in(1, 10000), default=5, help="default 5")
    p.add_argument("--batch_size", type=int_in(1, 65536), default=16, help="images per process per step (default 16)")
    p.add_argument("--warmup_step_number", type=int_in(0, 10**9), default=0, help="linear warmup steps (default 0)")
    p.add_argument("--learning_rate", type=float_in(1e-12, 10.0), default=0.001,
                   help="per process; multiplied by the number of processes (default 0.001)")
    p.add_argument("--random_seed", type=int_in(0, 2**31 - 1), default=1, help="default 1")
    p.add_argument("--patience", type=int_in(1, 10000), default=3,
                   help="stop after this many epochs without a lower validation loss (default 3)")
    p.add_argument("--print_frequency", type=int_in(1, 10**6), default=10, help="log every N steps (default 10)")
    p.add_argument("--sync_batch_norm", type=boolean, default=False, metavar="BOOL",
                   help="batch-norm statistics over all processes' images under DDP (default False)")
    p.add_argument("--workers", type=int_in(0, 64), default=None, help="data loader processes (default: sized to the CPUs)")
    p.add_argument("--checkpoint_path", default=None,
                   help="optional folder for a checkpoint every epoch; a rerun pointed at it resumes")
    p.add_argument("--trained_model", required=True, help="new or empty folder for the trained ModelDirectory")
    return p


def main(argv=None) -> None:
    args = vars(build_parser().parse_args(argv))
    dirs = {k: args.pop(k) for k in ("untrained_model", "training_data", "validation_data", "trained_model", "checkpoint_path")}
    result = train(dirs["untrained_model"], dirs["training_data"], dirs["validation_data"], dirs["trained_model"],
                   TrainConfig(**args), checkpoint_dir=dirs["checkpoint_path"])
    if result.model is not None:  # rank 0
        best = result.history[result.best_epoch - 1]
        print(f"trained {len(result.history)} epoch(s); best validation top-1 {best.top1:.4f} at epoch {best.epoch}; "
              f"model in {dirs['trained_model']}")


if __name__ == "__main__":
    sys.exit(run_entry(main))
