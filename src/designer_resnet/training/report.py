"""Training curves (PNG) and per-epoch metrics in MLflow."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

MLFLOW_DB = "mlflow.db"
EXPERIMENT = "train_pytorch_model"


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


class MetricsLog:
    """Per-epoch metrics to MLflow, as each epoch ends.

    On Azure ML, MLFLOW_TRACKING_URI and MLFLOW_RUN_ID name the job's own run,
    so metrics show in the studio. Without them an sqlite store is kept inside
    the output folder (`mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`).
    """

    def __init__(self, stage: Path, final_output: Path, params: dict):
        from mlflow.tracking import MlflowClient

        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        self._local = not env_uri
        self.client = MlflowClient(tracking_uri=env_uri or f"sqlite:///{(stage / MLFLOW_DB).resolve()}")
        self._owned = "MLFLOW_RUN_ID" not in os.environ
        if self._owned:
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                # Artifacts (none today) would go beside the final folder, never the working directory.
                location = (Path(final_output).resolve() / "mlartifacts").as_uri() if self._local else None
                experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=location)
            else:
                experiment_id = experiment.experiment_id
            self.run_id = self.client.create_run(experiment_id, run_name=EXPERIMENT).info.run_id
        else:
            self.run_id = os.environ["MLFLOW_RUN_ID"]
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log_epoch(self, result) -> None:
        from mlflow.entities import Metric

        row = asdict(result)
        step = row.pop("epoch")
        now = int(time.time() * 1000)
        names = {"lr": "learning_rate"}
        self.client.log_batch(self.run_id, metrics=[Metric(names.get(k, k), float(v), now, step) for k, v in row.items()])

    def close(self, status: str = "FINISHED") -> None:
        if self._owned:
            self.client.set_terminated(self.run_id, status)
        if self._local:
            # Release the sqlite file before its folder is moved into place.
            store = self.client._tracking_client.store
            engine = getattr(store, "engine", None)
            if engine is not None:
                engine.dispose()
