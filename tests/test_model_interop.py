"""Model folders pass both ways between Microsoft's built-in modules and ours.

Built-in folders are written here exactly as the built-in ResNet and Train PyTorch
Model write them (docs/formats.md), with state dicts generated in the test. The
other direction checks our folders against what the built-in loaders do with
them: parse `time_created` in their format, rebuild `class(**init_params)` from
`flavor_extras` and load `model` into it strictly.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
import torchvision.transforms as T
import yaml
from torch import nn

from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import read_trained, read_untrained
from designer_resnet.scoring.score import score_image_model
from designer_resnet.training.train import TrainConfig, train

from conftest import convert_train_valid

PACKAGE = "azureml.designer.modules.dl.pytorch.initialize_models.vision.classification"
NORMALIZER = "azureml.designer.core.model.model_spec.builtin_model_meta.pre_processor"
BUILTIN_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"
CLASSES = ["a", "b", "c"]


class BuiltinNet(nn.Module):
    """What the built-in ResNet/DenseNet class builds from init_params: the torchvision net under `model`,
    and with `pretrained` and `num_classes` a 1000 -> N layer `out_linear_model` stacked on its logits."""

    def __init__(self, model_name, pretrained=False, num_classes=None, **settings):
        super().__init__()
        if pretrained or num_classes is None:
            self.model = tvm.get_model(model_name, weights=None, **settings)
        else:
            self.model = tvm.get_model(model_name, weights=None, num_classes=num_classes, **settings)
        if pretrained and num_classes is not None:
            last = self.model.fc if hasattr(self.model, "fc") else self.model.classifier
            self.out_linear_model = nn.Linear(last.out_features, num_classes)

    def forward(self, x):
        out = self.model(x)
        return self.out_linear_model(out) if hasattr(self, "out_linear_model") else out


def _write_yaml(path: Path, doc: dict) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_builtin_untrained(folder: Path, model_name="resnet18", pretrained=False, seed=0) -> dict:
    """The built-in ResNet module's UntrainedModelDirectory; returns the state dict it holds (keys `model.*`)."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    state = BuiltinNet(model_name).state_dict()
    torch.save(state, folder / "model")
    _write_yaml(folder / "_meta.yaml", {"type": "ModelDirectory", "extension": {}, "model": "model_spec.yaml"})
    _write_yaml(folder / "model_spec.yaml", {
        "flavor": {"name": "pytorch", "serialization_method": "state_dict"},
        "model_file": "model", "time_created": "2026-11-23T16:35:23.849667+0000",
        "flavor_extras": {"module": f"{PACKAGE}.resnet", "class": "ResNet", "is_cuda": False,
                          "init_params": {"model_name": model_name, "pretrained": pretrained,
                                          "zero_init_residual": False}},
        "task_type": "MultiClassification"})
    return state


def write_builtin_trained(folder: Path, pretrained: bool, model_name="resnet18", seed=0) -> BuiltinNet:
    """The built-in Train PyTorch Model's ModelDirectory (3 classes); returns the network it holds."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    net = BuiltinNet(model_name, pretrained=pretrained, num_classes=len(CLASSES)).eval()
    torch.save(net.state_dict(), folder / "model")
    with open(folder / "index_to_label.csv", "w", newline="") as f:
        csv.writer(f).writerows([["", "label"], *[[i, c] for i, c in enumerate(CLASSES)]])
    _write_yaml(folder / "_meta.yaml", {"type": "ModelDirectory", "extension": {}, "model": "model_spec.yaml",
                                        "registerModel": True, "modelOutputPath": "trained_model_outputs"})
    _write_yaml(folder / "model_spec.yaml", {
        "flavor": {"name": "pytorch", "serialization_method": "state_dict"},
        "model_file": "model", "time_created": "2026-11-23T16:36:22.562151+0000",
        "flavor_extras": {"module": f"{PACKAGE}.resnet", "class": "ResNet", "is_cuda": False,
                          "init_params": {"model_name": model_name, "pretrained": pretrained,
                                          "zero_init_residual": False, "num_classes": len(CLASSES)}},
        "task_type": "MultiClassification", "label_map_file": "index_to_label.csv",
        "inputs": [{"name": "image", "pre_processor": {"module": NORMALIZER, "class": "ImageNormalizer",
                                                       "init_params": {"mean": [0.5] * 3, "std": [0.5] * 3}}}]})
    return net


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return convert_train_valid(tmp_path_factory.mktemp("interop"), 6, 3)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 6, "learning_rate": 0.01, "workers": 0, **kw})


@pytest.mark.parametrize("pretrained", [False, True])
def test_our_train_trains_a_builtin_untrained_resnet(data, tmp_path, pretrained):
    state = write_builtin_untrained(tmp_path / "builtin_untrained", pretrained=pretrained)
    untrained = read_untrained(tmp_path / "builtin_untrained")
    net = untrained.build(3)
    assert net.fc.out_features == 3  # our head replaces the 1000-way one
    # Pre-trained: the folder's own ImageNet tensors are the starting point (no download needed).
    assert torch.equal(net.conv1.weight, state["model.conv1.weight"]) == pretrained
    result = train(tmp_path / "builtin_untrained", data / "train", data / "valid", tmp_path / "model", _cfg())
    assert len(result.history) == 1 and read_trained(tmp_path / "model").categories == CLASSES


def _builtin_probabilities(net: BuiltinNet, directory: ImageDirectory) -> np.ndarray:
    """What the built-in Score Image Model computes: ToTensor, Normalize(0.5, 0.5), the network, softmax."""
    prep = T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    batch = torch.stack([prep(directory.open_image(row)) for row in directory.rows])
    with torch.no_grad():
        return torch.softmax(net(batch), dim=1).numpy()


@pytest.mark.parametrize("pretrained", [False, True], ids=["plain", "stacked_head"])
def test_our_score_scores_a_builtin_trained_model_as_the_builtin_would(data, tmp_path, pretrained):
    net = write_builtin_trained(tmp_path / "builtin_model", pretrained)
    model = read_trained(tmp_path / "builtin_model")
    assert model.builtin and model.preprocess["mean"] == [0.5] * 3 and model.preprocess["transforms"] == []
    score_image_model(tmp_path / "builtin_model", data / "valid", tmp_path / "scored")
    scored = read_dataframe_directory(tmp_path / "scored")
    probs = scored[[f"Scored Probabilities_{c}" for c in CLASSES]].to_numpy()
    expected = _builtin_probabilities(net, ImageDirectory.load(data / "valid"))
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert scored["Scored Labels"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]


def _load_as_builtin(folder: Path, *, trained: bool) -> BuiltinNet:
    """The built-in loader's steps on a folder: its time format, `class(**init_params)`, a strict load of `model`."""
    meta = yaml.safe_load((folder / "_meta.yaml").read_text())
    assert meta["type"] == "ModelDirectory" and meta["model"] == "model_spec.yaml"
    spec = yaml.safe_load((folder / meta["model"]).read_text())
    datetime.strptime(spec["time_created"], BUILTIN_TIME)
    extras = spec["flavor_extras"]
    assert (extras["module"], extras["class"]) == (f"{PACKAGE}.resnet", "ResNet")
    assert spec["model_file"] and spec["task_type"] == "MultiClassification"
    if trained:
        pre = spec["inputs"][0]["pre_processor"]
        assert (pre["module"], pre["class"]) == (NORMALIZER, "ImageNormalizer")
        assert set(pre["init_params"]) == {"mean", "std"}
        assert (folder / spec["label_map_file"]).read_text().splitlines()[0] == ",label"
    params = dict(extras["init_params"])
    # The built-in Train first checks an untrained folder as ResNet(**init_params) (1000-way);
    # its Score builds the trained one as is, and with pretrained false nothing is downloaded.
    net = BuiltinNet(**params)
    net.load_state_dict(torch.load(folder / spec["model_file"], weights_only=True))
    return net.eval()


@pytest.mark.parametrize("pretrained", [False, True])
def test_builtin_train_loads_our_untrained_folder(tmp_path, pretrained):
    weights = None
    if pretrained:
        weights = tmp_path / "imagenet.pth"
        torch.save(tvm.resnet18().state_dict(), weights)
    create_untrained_model(tmp_path / "ours", {"model_name": "resnet18", "pretrained": pretrained,
                                               "zero_init_residual": False}, weights_file=weights)
    net = _load_as_builtin(tmp_path / "ours", trained=False)
    assert net.model.fc.out_features == 1000
    if pretrained:
        assert torch.equal(net.model.conv1.weight, torch.load(weights, weights_only=True)["conv1.weight"])


def test_builtin_score_loads_our_trained_folder_and_scores_alike(data, tmp_path):
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    train(tmp_path / "untrained", data / "train", data / "valid", tmp_path / "model", _cfg())
    net = _load_as_builtin(tmp_path / "model", trained=True)
    spec = yaml.safe_load((tmp_path / "model" / "model_spec.yaml").read_text())
    mean_std = spec["inputs"][0]["pre_processor"]["init_params"]
    # The built-in's scoring: ToTensor and Normalize with the pre-processor's mean/std, no resizing.
    prep = T.Compose([T.ToTensor(), T.Normalize(mean_std["mean"], mean_std["std"])])
    valid = ImageDirectory.load(data / "valid")
    with torch.no_grad():
        theirs = torch.softmax(net(torch.stack([prep(valid.open_image(r)) for r in valid.rows])), 1).numpy()
    score_image_model(tmp_path / "model", data / "valid", tmp_path / "scored")
    ours = read_dataframe_directory(tmp_path / "scored")[[f"Scored Probabilities_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_builtin_folder_naming_another_preprocessor_is_refused(tmp_path):
    write_builtin_trained(tmp_path / "m", pretrained=False)
    spec_path = tmp_path / "m" / "model_spec.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["inputs"][0]["pre_processor"] = {"module": "os", "class": "system", "init_params": {}}
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match=r"pre-processor os\.system is not one we can apply"):
        read_trained(tmp_path / "m")


def test_builtin_untrained_folder_in_score_is_refused_in_one_line(tmp_path):
    write_builtin_untrained(tmp_path / "m")
    with pytest.raises(UserError, match="is an untrained model; train it with Train PyTorch Model first"):
        read_trained(tmp_path / "m")
