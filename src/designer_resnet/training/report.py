"""Training curves (PNG) and per-epoch metrics in MLflow."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

log = logging.getLogger(__name__)
MLFLOW_DB = "mlflow.db"


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


def log_metrics(history, cfg, init_params: dict, output: Path) -> None:
    """Log params and per-epoch metrics to MLflow.

    Azure ML sets MLFLOW_TRACKING_URI, so runs land in the workspace; without
    it, an sqlite store inside the output folder keeps them
    (`mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`).
    """
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(output / MLFLOW_DB).resolve()}"
    mlflow.set_tracking_uri(uri)
    active = mlflow.active_run()
    with (mlflow.start_run(nested=True) if active else mlflow.start_run(run_name="train_pytorch_model")):
        mlflow.log_params({**asdict(cfg), **{f"model_{k}": v for k, v in init_params.items()}})
        for h in history:
            row = asdict(h)
            epoch = row.pop("epoch")
            mlflow.log_metrics({("learning_rate" if k == "lr" else k): v for k, v in row.items()}, step=epoch)
