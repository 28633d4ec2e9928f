"""The pre-processing ledger: data and models record what was done to the images, Score applies what is missing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.data.split import split_image_directory
from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError
from designer_resnet.models.model_directory import read_trained
from designer_resnet.scoring.score import score_image_model
from designer_resnet.transforms.ledger import Ledger

RESIZE_CROP = [["Resize", 40], ["CenterCrop", 32]]


def _probs(folder):
    table = read_dataframe_directory(folder)
    return table.sort_values("id")[[c for c in table.columns if c.startswith("Scored Probabilities_")]].to_numpy()


def test_data_records_what_its_files_hold_and_what_is_pending(transformed_model, tmp_path):
    root = transformed_model
    assert Ledger(ImageDirectory.load(root / "test").extension).applied == []  # Convert: raw images
    train = ImageDirectory.load(root / "train")
    assert Ledger(train.extension).applied == RESIZE_CROP
    assert Ledger(train.extension).pending == [["RandomHorizontalFlip", {}]]  # re-drawn every epoch
    test_tf = ImageDirectory.load(root / "test_tf")
    assert Ledger(test_tf.extension).applied == RESIZE_CROP and Ledger(test_tf.extension).pending == []
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
    from designer_resnet.transforms.apply import apply_image_transformation

    root = transformed_model
    # Lossless, so the copy holds exactly the pixels Score makes from the raw photos (JPEG would add its own loss).
    apply_image_transformation(root / "tf", root / "test", tmp_path / "test_tf", mode="For inference", lossless=True)
    score_image_model(root / "model", root / "test", tmp_path / "raw_scored", workers=0)
    score_image_model(root / "model", tmp_path / "test_tf", tmp_path / "tf_scored", workers=0)
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


def _extension(applied=None, pending=None) -> dict:
    ours = {}
    if applied is not None:
        ours["applied_transforms"] = applied
    if pending is not None:
        ours["pending_transforms"] = pending
    return {"designer_resnet": ours}


def _count_validations(monkeypatch) -> list:
    import designer_resnet.transforms.ledger as ledger_module

    calls = []
    real = ledger_module.validate_ops

    def counting(ops, *, input_name):
        calls.append(input_name)
        return real(ops, input_name=input_name)

    monkeypatch.setattr(ledger_module, "validate_ops", counting)
    return calls


def test_the_ledger_validates_each_list_once_however_often_it_is_read(monkeypatch):
    calls = _count_validations(monkeypatch)
    normalize = ["Normalize", {"mean": [0.5] * 3, "std": [0.2] * 3}]
    ledger = Ledger(_extension(RESIZE_CROP, [["RandomHorizontalFlip", {}], normalize]))
    assert ledger.inference_chain([], None)["transforms"] == RESIZE_CROP + [normalize]  # the flip is not inference's
    assert ledger.ops_to_score({"transforms": RESIZE_CROP + [["Pad", 2]]}) == [["Pad", 2]]
    assert ledger.extension_after([["Pad", 2]], [])["designer_resnet"]["applied_transforms"] == RESIZE_CROP + [["Pad", 2]]
    assert ledger.pending == [["RandomHorizontalFlip", {}], normalize] and ledger.applied == RESIZE_CROP
    assert sorted(calls) == ["ImageDirectory extension (applied_transforms)",
                             "ImageDirectory extension (pending_transforms)"]


def test_an_invalid_ledger_is_refused_in_one_line_wherever_it_is_read():
    bad_applied = Ledger(_extension(applied=[["Lambda", "os.system"]]))
    bad_pending = Ledger(_extension(pending=[["Pad", 40000]]))
    uses = [(bad_applied, lambda l: l.applied), (bad_applied, lambda l: l.inference_chain([], None)),
            (bad_applied, lambda l: l.ops_to_score({"transforms": []})), (bad_applied, lambda l: l.extension_after([], [])),
            (bad_pending, lambda l: l.pending), (bad_pending, lambda l: l.inference_chain([], None))]
    for ledger, use in uses:
        with pytest.raises(UserError) as refused:
            use(ledger)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(("ImageDirectory extension (applied_transforms): unknown transform 'Lambda'",
                                   "ImageDirectory extension (pending_transforms): Pad padding [40000] is outside"))


def test_transforms_for_reads_each_folders_ledger_once(tmp_path, monkeypatch):
    """Training's op lists come from one Ledger per folder: each op list validated once (it was six times)."""
    from designer_resnet.directories.transformation_directory import write_transformation_directory
    from designer_resnet.training.dataset import transforms_for
    from designer_resnet.transforms.apply import apply_image_transformation

    from conftest import write_labelled_set

    write_labelled_set(tmp_path / "raw", 2)
    convert_to_image_directory(tmp_path / "raw", tmp_path / "data")
    write_transformation_directory(tmp_path / "tf", [["Resize", 40], ["RandomHorizontalFlip", {}], ["CenterCrop", 32]])
    for name in ("train", "valid"):
        apply_image_transformation(tmp_path / "tf", tmp_path / "data", tmp_path / name, mode="For training")
    train, valid = ImageDirectory.load(tmp_path / "train"), ImageDirectory.load(tmp_path / "valid")
    calls = _count_validations(monkeypatch)
    ops = transforms_for(train, valid, [0.5] * 3, [0.25] * 3)
    normalize = ["Normalize", {"mean": [0.5] * 3, "std": [0.25] * 3}]
    assert ops.train_ops == [["RandomHorizontalFlip", {}], ["CenterCrop", 32], normalize]
    assert ops.valid_ops == [["CenterCrop", 32], normalize]
    assert ops.preprocess["transforms"] == [["Resize", 40], ["CenterCrop", 32]]
    # train's pending and applied ops, valid's pending ops; valid's applied ops are not needed.
    assert sorted(calls) == ["ImageDirectory extension (applied_transforms)"] + [
        "ImageDirectory extension (pending_transforms)"] * 2
