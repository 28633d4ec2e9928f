"""Azure ML designer components for image classification with ResNet."""

import os

__version__ = "0.1.0"

# MLflow's documented opt-out of its usage telemetry (it reaches an outside host and writes
# ~/.config/mlflow). Set before anything imports mlflow, which starts its client at import;
# inherited by torchrun workers. A value the user set is kept.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
