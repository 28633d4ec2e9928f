"""MLflow logging for a component run: the Azure ML job's run, or a local sqlite store."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

MLFLOW_DB = "mlflow.db"


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
