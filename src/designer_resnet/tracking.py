"""Metrics of a component run: MLflow (the Azure ML job's run, or a local sqlite store), or a CSV in the output."""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path

MLFLOW_DB = "mlflow.db"


def on_tracking_server() -> bool:
    """True where a tracking server is set for this process (Azure ML sets MLFLOW_TRACKING_URI for every job)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


class MlflowLog:
    """Params and metrics to MLflow while a component runs.

    On Azure ML, MLFLOW_TRACKING_URI and MLFLOW_RUN_ID name the job's own run,
    so metrics show in the studio. Without them an sqlite store is kept inside
    the output folder (`mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`).
    """

    def __init__(self, stage: Path, final_output: Path, experiment: str, params: dict | None = None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # Creating a fresh local store logs schema migrations at INFO; not news to the user.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        self._local = not env_uri
        self.client = MlflowClient(tracking_uri=env_uri or f"sqlite:///{(stage / MLFLOW_DB).resolve()}")
        self._owned = "MLFLOW_RUN_ID" not in os.environ
        if self._owned:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                # Artifacts (none today) would go inside the final folder, never the working directory.
                location = (Path(final_output).resolve() / "mlartifacts").as_uri() if self._local else None
                experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                experiment_id = found.experiment_id
            self.run_id = self.client.create_run(experiment_id, run_name=experiment).info.run_id
        else:
            self.run_id = os.environ["MLFLOW_RUN_ID"]
        if params:
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, status: str = "FINISHED") -> None:
        if self._owned:
            self.client.set_terminated(self.run_id, status)
        if self._local:
            # Release the sqlite file before its folder is moved into place.
            engine = getattr(self.client._tracking_client.store, "engine", None)
            if engine is not None:
                engine.dispose()


class StepLog:
    """Metrics per step (an epoch) as a small CSV in the output folder, and in MLflow where a server is set.

    The CSV (one row per step, a column per metric) is always written and costs
    nothing to keep. MLflow is used only where MLFLOW_TRACKING_URI is set (on
    Azure ML: the job's own run, exactly as MlflowLog logs it); a local run
    never imports MLflow for it, nor builds an sqlite store, which took seconds
    per run (mlflow, SQLAlchemy and Alembic imports and ~60 schema migrations).
    """

    def __init__(self, stage: Path, final_output: Path, experiment: str, params: dict | None = None, *,
                 file_name: str, step_name: str = "epoch"):
        self.path = Path(stage) / file_name
        self.step_name = step_name
        self._rows: dict[int, dict[str, float]] = {}
        self.mlflow = MlflowLog(stage, final_output, experiment, params) if on_tracking_server() else None

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._rows.setdefault(step, {}).update({k: float(v) for k, v in metrics.items()})
        self._write()
        if self.mlflow is not None:
            self.mlflow.log(metrics, step=step)

    def _write(self) -> None:
        names: dict[str, None] = {}
        for row in self._rows.values():
            names.update(dict.fromkeys(row))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow([self.step_name, *names])
            for step in sorted(self._rows):
                row = self._rows[step]
                out.writerow([step, *(repr(row[n]) if n in row else "" for n in names)])
        os.replace(tmp, self.path)

    def close(self, status: str = "FINISHED") -> None:
        if self.mlflow is not None:
            self.mlflow.close(status)
