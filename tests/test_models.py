"""ResNet/DenseNet creation, ImageNet weights through the torch hub cache, model folders."""

from __future__ import annotations

from datetime import datetime

import pytest
import torch
import yaml
from torch import nn

from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import MODEL_SPEC, read_trained, read_untrained
from designer_resnet.models.registry import (
    DENSENETS,
    RESNETS,
    build_backbone,
    build_model,
    cache_path,
)
from designer_resnet.errors import UserError

from conftest import run_module


def _head(model: nn.Module) -> nn.Linear:
    return model.fc if hasattr(model, "fc") else model.classifier


# The model names the designer's ResNet module offers.
DESIGNER_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                    "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")


def test_designer_names_are_all_offered():
    assert set(DESIGNER_RESNETS) < set(RESNETS) and "resnext101_64x4d" in RESNETS


@pytest.mark.parametrize("name", RESNETS + DENSENETS)
def test_every_architecture_builds_with_a_three_class_head(name):
    model = build_model(name, 3)
    head = _head(model)
    assert isinstance(head, nn.Linear) and head.out_features == 3
    # The head replaces the 1000-way layer; nothing is stacked after it.
    assert head.in_features == _head(build_backbone(name)).in_features
    if name in ("resnet18", "densenet121"):
        model.eval()
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def _fake_imagenet_weights(tmp_path, monkeypatch, name: str, choice: str = "DEFAULT") -> dict:
    """A weights file of the right shapes, random values, placed where torch hub caches it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(123)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in build_backbone(name).state_dict().items()}
    path = cache_path(name, choice)
    assert str(path).startswith(str(tmp_path / "torch_home" / "hub" / "checkpoints"))
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("name,choice", [("resnet18", "DEFAULT"), ("resnet50", "IMAGENET1K_V1"), ("densenet121", "DEFAULT")])
def test_pretrained_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch, name, choice):
    state = _fake_imagenet_weights(tmp_path, monkeypatch, name, choice)
    create_untrained_model(tmp_path / "untrained", {"model_name": name, "pretrained": True, "weights": choice})
    untrained = read_untrained(tmp_path / "untrained")
    model = untrained.build(3)
    loaded = model.state_dict()
    head = "fc." if name.startswith("res") else "classifier."
    body = [k for k in state if not k.startswith(head)]
    assert body and all(torch.equal(loaded[k], state[k]) for k in body)
    assert loaded[head + "weight"].shape == (3, state[head + "weight"].shape[1])


def test_missing_weights_offline_names_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    result = run_module("resnet", "--model_name", "resnet34", "--output_path", tmp_path / "out")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line and "resnet34-b627a593.pth" in line
    assert str(tmp_path / "empty_home" / "hub" / "checkpoints") in line and "weights_file" in line
    assert not (tmp_path / "out").exists()


def test_weights_file_input_is_used_and_checked(tmp_path, monkeypatch):
    state = _fake_imagenet_weights(tmp_path, monkeypatch, "resnet18")
    given = tmp_path / "upload"
    given.mkdir()
    torch.save(state, given / "my_weights.pth")
    cache_path("resnet18", "DEFAULT").unlink()
    create_untrained_model(tmp_path / "m", {"model_name": "resnet18", "pretrained": True}, weights_file=given)
    assert torch.equal(read_untrained(tmp_path / "m").build(2).state_dict()["conv1.weight"], state["conv1.weight"])
    with pytest.raises(UserError, match="do not fit resnet34"):
        create_untrained_model(tmp_path / "m2", {"model_name": "resnet34", "pretrained": True}, weights_file=given)
    assert not (tmp_path / "m2").exists()


def test_untrained_directory_records_what_to_build(tmp_path):
    result = run_module("resnet", "--model_name", "resnet18", "--pretrained", "False", "--zero_init_residual", "True",
                        "--output_path", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    meta = yaml.safe_load((tmp_path / "m" / "_meta.yaml").read_text())
    spec = yaml.safe_load((tmp_path / "m" / MODEL_SPEC).read_text())
    assert meta == {"type": "ModelDirectory", "extension": {}, "model": "model_spec.yaml"}
    assert spec["designer_resnet"]["init_params"] == {"model_name": "resnet18", "pretrained": False,
                                                      "weights": "DEFAULT", "zero_init_residual": True}
    # What the built-in Train PyTorch Model reads: its own class, its init_params, a loadable 1000-way `model`.
    extras = spec["flavor_extras"]
    assert extras["class"] == "ResNet" and extras["module"].endswith("vision.classification.resnet")
    assert extras["init_params"] == {"model_name": "resnet18", "pretrained": False, "zero_init_residual": True}
    assert spec["task_type"] == "MultiClassification" and spec["model_file"] == "model"
    datetime.strptime(spec["time_created"], "%Y-%m-%dT%H:%M:%S.%f%z")
    state = torch.load(tmp_path / "m" / "model", weights_only=True)
    assert all(k.startswith("model.") for k in state) and state["model.fc.weight"].shape == (1000, 512)
    model = read_untrained(tmp_path / "m").build(4)
    assert all((b.bn2.weight == 0).all() for b in model.layer1)


def test_model_folder_naming_foreign_code_is_refused(tmp_path):
    run_module("resnet", "--model_name", "resnet18", "--pretrained", "false", "--output_path", tmp_path / "m")
    spec_path = tmp_path / "m" / MODEL_SPEC
    spec = yaml.safe_load(spec_path.read_text())
    del spec["designer_resnet"]
    spec["flavor_extras"]["module"] = "os"
    spec["flavor_extras"]["class"] = "system"
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match="the model class os.system is neither ours nor a built-in ResNet or DenseNet"):
        read_untrained(tmp_path / "m", input_name="untrained_model")


def test_untrained_model_is_not_a_trained_one(tmp_path):
    run_module("densenet", "--model_name", "densenet121", "--pretrained", "false", "--output_path", tmp_path / "m")
    with pytest.raises(UserError, match="untrained model; train it with Train PyTorch Model first"):
        read_trained(tmp_path / "m")


def test_model_file_linking_outside_the_folder_is_refused(tmp_path):
    run_module("resnet", "--model_name", "resnet18", "--pretrained", "false", "--output_path", tmp_path / "m")
    spec_path = tmp_path / "m" / MODEL_SPEC
    spec = yaml.safe_load(spec_path.read_text())
    spec["designer_resnet"]["init_params"]["pretrained"] = True
    spec_path.write_text(yaml.safe_dump(spec))
    (tmp_path / "m" / "model").rename(tmp_path / "elsewhere")
    (tmp_path / "m" / "model").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="untrained_model: model links outside"):
        read_untrained(tmp_path / "m", input_name="untrained_model")
