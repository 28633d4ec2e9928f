"""Fine-tuning (issue 19): Train continues a trained ModelDirectory, ours or the built-in's, on the same, more or
other classes, and the folder it writes records where its weights came from."""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import read_start, read_trained
from designer_resnet.specs import accepts
from designer_resnet.training.train import TrainConfig, train

from conftest import convert_train_valid, run_module
from test_model_interop import write_builtin_trained

OLD, NEW = ["a", "b", "c"], ["a", "b", "c", "d"]


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 6, "learning_rate": 0.01, "workers": 0, **kw})


def _spec(folder) -> dict:
    return yaml.safe_load((folder / "model_spec.yaml").read_text())["designer_resnet"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A resnet18 trained 1 epoch on classes a, b, c; and a set with a fourth class d."""
    root = tmp_path_factory.mktemp("finetune")
    convert_train_valid(root / "old", 6, 2, classes=tuple(OLD))
    convert_train_valid(root / "new", 6, 2, classes=tuple(NEW))
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    train(root / "untrained", root / "old" / "train", root / "old" / "valid", root / "model", _cfg())
    return root


def test_a_trained_model_continued_on_more_classes_scores_the_old_ones_as_before_then_trains(first, tmp_path):
    trained = read_trained(first / "model")
    start = read_start(first / "model")
    net = start.build_for(NEW).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x)[:, :3], trained.model(x), atol=1e-5, rtol=0)
    result = train(first / "model", first / "new" / "train", first / "new" / "valid", tmp_path / "more", _cfg())
    assert len(result.history) == 1 and read_trained(tmp_path / "more").categories == NEW
    lineage = _spec(tmp_path / "more")["lineage"]
    weights = hashlib.sha256((first / "model" / "model").read_bytes()).hexdigest()
    assert [e["categories"] for e in lineage] == [OLD] and lineage[0]["weights_sha256"] == weights
    assert lineage[0]["writer"] == "designer-resnet" and lineage[0]["model_name"] == "resnet18"
    # Continued again: the lineage grows, newest first.
    train(tmp_path / "more", first / "new" / "train", first / "new" / "valid", tmp_path / "again", _cfg())
    assert [e["categories"] for e in _spec(tmp_path / "again")["lineage"]] == [NEW, OLD]


def test_a_new_class_set_replaces_the_head(first, tmp_path):
    convert_train_valid(tmp_path / "other", 6, 2, classes=("x", "y"))
    train(first / "model", tmp_path / "other" / "train", tmp_path / "other" / "valid", tmp_path / "out", _cfg())
    assert read_trained(tmp_path / "out").categories == ["x", "y"]
    assert _spec(tmp_path / "out")["lineage"][0]["categories"] == OLD


@pytest.mark.parametrize("pretrained", [False, True], ids=["plain", "stacked_head"])
def test_a_builtin_trained_model_is_continued(first, tmp_path, pretrained):
    builtin = write_builtin_trained(tmp_path / "builtin", pretrained=pretrained)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(read_start(tmp_path / "builtin").build_for(OLD).eval()(x), builtin(x), atol=1e-4)
    train(tmp_path / "builtin", first / "new" / "train", first / "new" / "valid", tmp_path / "out", _cfg())
    assert read_trained(tmp_path / "out").categories == NEW
    assert _spec(tmp_path / "out")["lineage"][0]["writer"] == "azureml-designer"


def test_a_checkpoint_of_another_starting_model_is_refused(first, tmp_path):
    train(first / "model", first / "new" / "train", first / "new" / "valid", tmp_path / "one", _cfg(),
          checkpoint_dir=tmp_path / "ckpt")
    train(tmp_path / "one", first / "new" / "train", first / "new" / "valid", tmp_path / "elsewhere", _cfg())
    with pytest.raises(UserError, match="untrained_model"):
        train(tmp_path / "one", first / "new" / "train", first / "new" / "valid", tmp_path / "two", _cfg(epochs=2),
              checkpoint_dir=tmp_path / "ckpt")


def test_a_damaged_lineage_is_one_line(first, tmp_path):
    import shutil

    shutil.copytree(first / "model", tmp_path / "model")
    spec = yaml.safe_load((tmp_path / "model" / "model_spec.yaml").read_text())
    spec["designer_resnet"]["lineage"] = [{"model_name": {"nested": "object"}}]
    (tmp_path / "model" / "model_spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match="lineage"):
        read_start(tmp_path / "model")


def test_model_name_cannot_rebuild_a_trained_model(first, tmp_path):
    result = run_module("train_pytorch_model", "--untrained_model", str(first / "model"),
                        "--training_data", str(first / "new" / "train"), "--validation_data",
                        str(first / "new" / "valid"), "--model_name", "resnet34", "--trained_model",
                        str(tmp_path / "out"), "--checkpoint_path", str(tmp_path / "ckpt"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model_name" in errors[0] and "trained model" in errors[0]


def test_train_takes_either_model_folder_and_nothing_else(first, tmp_path):
    assert accepts("UntrainedModelDirectory or ModelDirectory", "ModelDirectory")
    assert accepts("UntrainedModelDirectory or ModelDirectory", "UntrainedModelDirectory")
    assert not accepts("UntrainedModelDirectory or ModelDirectory", "ImageDirectory")
    with pytest.raises(UserError, match="expected UntrainedModelDirectory or ModelDirectory"):
        read_start(first / "old" / "train")
