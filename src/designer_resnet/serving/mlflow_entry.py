"""MLflow's entry into a trained model folder (models from code: no pickle).

`mlflow.pyfunc.save_model` copies this file into the model folder; MLflow runs
that copy when it loads the model, with the folder's `code/` (this package) on
the path, so `__file__` is inside the model folder it serves.
"""

from pathlib import Path

import mlflow

from designer_resnet.serving.pyfunc import ImageClassifier

mlflow.models.set_model(ImageClassifier(Path(__file__).resolve().parent))
