"""The predictor Score Image Model and the served model share.

That both give the same probabilities for the same image is checked end to end in
tests/test_serving.py (test_pyfunc_loads_with_its_own_code_and_answers_as_score_does,
test_mlflow_models_serve_answers_raw_images_as_score_image_model_does).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from designer_resnet.inference import Predictor
from designer_resnet.models.model_directory import TrainedModel
from designer_resnet.transforms.ledger import Ledger
from designer_resnet.transforms.ops import image_pipeline

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
CHAIN = [["Resize", 40], ["CenterCrop", 32]]


def _model(transforms: list) -> TrainedModel:
    """A two-class network that takes any image size (no training: only the plumbing is under test)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return TrainedModel(net, ["a", "b"], {"transforms": transforms, "from_training_data": len(transforms),
                                         "mean": MEAN, "std": STD}, {})


def _images(sizes) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_predict_batches_images_of_mixed_sizes_and_keeps_their_order():
    predictor = Predictor(_model([]), device=torch.device("cpu"))
    images = _images([(20, 20), (30, 24), (20, 20), (30, 24), (16, 16)])
    one_by_one = np.concatenate([predictor.probabilities(predictor.per_image(i)[None]) for i in images])
    # Two at a time: batches cross chunk boundaries and mix sizes within a chunk.
    np.testing.assert_allclose(predictor.predict(iter(images), batch_size=2), one_by_one, atol=1e-6)
    np.testing.assert_allclose(one_by_one.sum(axis=1), 1.0, atol=1e-6)
    assert predictor.predict([]).shape == (0, 2)


def test_a_ledger_makes_the_predictor_apply_only_what_the_files_lack():
    """An image whose files already hold the model's chain scores as its raw original does."""
    model = _model(CHAIN)
    raw = _images([(45, 38)])
    prepared = [image_pipeline(CHAIN)(raw[0])]
    device = torch.device("cpu")
    from_raw = Predictor(model, device=device).predict(raw)
    from_prepared = Predictor(model, Ledger({"designer_resnet": {"applied_transforms": CHAIN}}), device=device)
    np.testing.assert_allclose(from_prepared.predict(prepared), from_raw, atol=1e-6)
    # Without the ledger the chain would run twice, and the answer would differ.
    assert not np.allclose(Predictor(model, device=device).predict(prepared), from_raw, atol=1e-6)
