"""Training curves (PNG) and per-epoch metrics in MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path


def plot_curves(history, path: Path) -> None:
    """Loss and accuracy per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h.train_loss for h in history], "o-", label="train loss")
    left.plot(epochs, [h.valid_loss for h in history], "o-", label="validation loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [1 - h.train_error for h in history], "o-", label="train accuracy")
    right.plot(epochs, [h.top1 for h in history], "o-", label="validation top-1")
    right.plot(epochs, [h.top5 for h in history], "o-", label="validation top-5")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.01)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def epoch_metrics(result) -> dict[str, float]:
    """An EpochResult as MLflow metric names (the epoch is the step)."""
    row = asdict(result)
    row.pop("epoch")
    row["learning_rate"] = row.pop("lr")
    return row
