"""The served model: a DataFrame of base64 image bytes in, per row `probs` and `labels` out.

The request format is Azure ML AutoML for Images' (docs/formats.md, "The MLflow model in a trained folder"):
one column `image`, each cell an image file (any format and size Pillow reads)
encoded in base64; each answer row holds `probs` (one per class, label-map order)
and `labels` (the class names). The model applies its whole pre-processing chain
from a raw image, so a photo gets the answer Score Image Model gives the same
file (both score with `inference.Predictor`). Weights are the folder's own `model` file, read by the same reader as
Score Image Model's; this package travels in the folder (`code/`).
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from ..errors import UserError

IMAGE_COLUMN = "image"
PROBS_COLUMN = "probs"
LABELS_COLUMN = "labels"
# Packages the served model imports; pinned to the versions it was written with.
REQUIREMENTS = ("torch", "torchvision", "pillow", "numpy", "pandas", "pyyaml", "mlflow")
_SCRATCH = ".mlflow-export"


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """The trained model folder at `folder`, as an MLflow pyfunc."""

    # No type hints on predict: the signature is given at save time, and MLflow would otherwise wrap
    # predict with a schema check of its own and warn when the hints are missing.
    _skip_type_hint_validation = True

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._predictor = None
        self._ops: list = []

    def load_context(self, context) -> None:
        from ..inference import Predictor
        from ..models.model_directory import read_trained

        model = read_trained(self.folder, input_name="model")
        # No ledger: requests are raw image files, so the whole pre-processing chain applies.
        self._ops = model.preprocess["transforms"]
        self._predictor = Predictor(model)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would enforce its own schema from them
        if self._predictor is None:
            self.load_context(context)
        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            raise MlflowException(f"the request needs one column {IMAGE_COLUMN!r} of base64-encoded image files",
                                  error_code=INVALID_PARAMETER_VALUE)
        images = (self._checked(decode_image(value, i), i) for i, value in enumerate(model_input[IMAGE_COLUMN]))
        try:
            probs = self._predictor.predict(images)
        except UserError as exc:  # the model's fault, not the request's (e.g. it outputs NaN): HTTP 500, our line
            raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from None
        labels = list(self._predictor.categories)
        return pd.DataFrame({PROBS_COLUMN: [row.astype(float).tolist() for row in probs],
                             LABELS_COLUMN: [labels for _ in range(len(probs))]})

    def _checked(self, image, row: int):
        """The decoded image, unless the model's pre-processing would enlarge it past the pixel limit (HTTP 400)."""
        from ..transforms.ops import ImageTooLarge, check_image_size

        try:
            check_image_size(self._ops, image.size)
        except ImageTooLarge as exc:
            raise MlflowException(f"row {row}: {exc}", error_code=INVALID_PARAMETER_VALUE) from None
        return image


def decode_image(value, row: int):
    """An RGB PIL image from a base64 string (or raw bytes); a clear error for this request otherwise."""
    from PIL import Image

    try:
        data = value if isinstance(value, (bytes, bytearray)) else base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise MlflowException(f"row {row}: the {IMAGE_COLUMN} value is not base64; send each image file's bytes "
                              "base64-encoded", error_code=INVALID_PARAMETER_VALUE) from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MlflowException(f"row {row}: the {IMAGE_COLUMN} value is not an image Pillow can read "
                              f"({exc.__class__.__name__}); send a PNG, JPEG or other image file",
                              error_code=INVALID_PARAMETER_VALUE) from None


def _pins() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _example() -> pd.DataFrame:
    """A one-row request with a tiny PNG: a few hundred bytes, no training image in it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buffer, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def save_mlflow_model(path: Path) -> None:
    """Make the trained model folder `path` also an MLflow model (MLmodel beside the designer files).

    Nothing is duplicated: the pyfunc reads the folder's own `model` and
    model_spec.yaml. The folder gets MLmodel, the entry file, this package
    under code/, the pinned requirements and a one-row input example.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    package = Path(__file__).resolve().parents[1]
    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.string, IMAGE_COLUMN)]),
        outputs=Schema([ColSpec(Array(DataType.double), PROBS_COLUMN), ColSpec(Array(DataType.string), LABELS_COLUMN)]))
    scratch = path / _SCRATCH  # inside the output, so a failure's clean-up removes it too
    clean = path / ".mlflow-code" / package.name
    shutil.copytree(package, clean, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    try:
        mlflow_log.setLevel(logging.WARNING)  # its input-example check is logged at INFO: not news to the user
        mlflow.pyfunc.save_model(str(scratch), python_model=str(Path(__file__).with_name("mlflow_entry.py")),
                                 code_paths=[str(clean)], signature=signature, input_example=_example(),
                                 pip_requirements=_pins())
        for child in scratch.iterdir():
            shutil.move(str(child), path / child.name)
    finally:
        mlflow_log.setLevel(level)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(clean.parent, ignore_errors=True)
