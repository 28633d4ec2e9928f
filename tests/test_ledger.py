"""The pre-processing ledger: data and models record what was done to the images, Score applies what is missing."""

from __future__ import annotations

import numpy as np
import yaml

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.data.split import split_image_directory
from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.models.model_directory import read_trained
from designer_resnet.scoring.score import score_image_model
from designer_resnet.transforms.ledger import applied_ops, pending_ops

RESIZE_CROP = [["Resize", 40], ["CenterCrop", 32]]


def _probs(folder):
    table = read_dataframe_directory(folder)
    return table.sort_values("id")[[c for c in table.columns if c.startswith("Scored Probabilities_")]].to_numpy()


def test_data_records_what_its_files_hold_and_what_is_pending(transformed_model, tmp_path):
    root = transformed_model
    assert applied_ops(ImageDirectory.load(root / "test").extension) == []  # Convert: raw images
    train = ImageDirectory.load(root / "train")
    assert applied_ops(train.extension) == RESIZE_CROP
    assert pending_ops(train.extension) == [["RandomHorizontalFlip", {}]]  # re-drawn every epoch
    test_tf = ImageDirectory.load(root / "test_tf")
    assert applied_ops(test_tf.extension) == RESIZE_CROP and pending_ops(test_tf.extension) == []
    # Split and Convert keep the ledger of an ImageDirectory they are given.
    split_image_directory(root / "train", tmp_path / "part1", tmp_path / "part2", fraction=0.5, seed=1)
    convert_to_image_directory(tmp_path / "part1", tmp_path / "again")
    for folder in ("part1", "part2", "again"):
        assert ImageDirectory.load(tmp_path / folder).extension == train.extension, folder


def test_model_records_the_whole_chain_from_a_raw_image(transformed_model):
    model = read_trained(transformed_model / "model")
    assert model.preprocess["transforms"] == RESIZE_CROP
    spec = yaml.safe_load((transformed_model / "model" / "model_spec.yaml").read_text())
    assert spec["designer_resnet"]["preprocess"]["from_training_data"] == 2


def test_raw_and_transformed_copies_score_the_same(transformed_model, tmp_path):
    """Score applies what each input lacks: everything to raw photos, nothing more to Apply's copies."""
    root = transformed_model
    score_image_model(root / "model", root / "test", tmp_path / "raw_scored", workers=0)
    score_image_model(root / "model", root / "test_tf", tmp_path / "tf_scored", workers=0)
    raw, tf = _probs(tmp_path / "raw_scored"), _probs(tmp_path / "tf_scored")
    assert raw.shape == (6, 3) and not np.isnan(raw).any()
    np.testing.assert_allclose(raw, tf, atol=1e-5)


def test_a_model_without_a_size_op_scores_photos_at_its_training_size(tmp_path):
    """Trained on 32x32 files with no transforms, it records a Resize to 32x32, so a 64x48 photo scores at that size."""
    from designer_resnet.models.create import create_untrained_model
    from designer_resnet.training.train import TrainConfig, train

    from conftest import write_labelled_set

    write_labelled_set(tmp_path / "raw", 4, size=(32, 24))
    convert_to_image_directory(tmp_path / "raw", tmp_path / "data")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    train(tmp_path / "untrained", tmp_path / "data", tmp_path / "data", tmp_path / "model",
          TrainConfig(epochs=1, batch_size=4, workers=0))
    assert read_trained(tmp_path / "model").preprocess["transforms"] == [["Resize", [[24, 32]]]]
