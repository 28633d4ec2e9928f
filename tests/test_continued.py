"""A trained network continued on another class set: rows of known classes kept by name, new rows fresh.

(Issue 19, fine-tuning: the network side. Train's use of it comes with the input port that takes a trained model.)
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from designer_resnet.models.continued import class_changes, continued_network, folded, head_of, lineage_entry
from designer_resnet.models.registry import StackedHead, build_backbone, build_model

OLD = ["cat", "dog", "owl"]


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = build_model("resnet18", len(OLD), {})
    with torch.no_grad():  # a head unlike a fresh one, so a kept row is told apart from a new one
        head_of(model).weight.mul_(5).add_(0.1)
    return model.eval(), torch.randn(3, 3, 32, 32)


def test_more_classes_keep_the_old_scores_before_any_step(trained):
    model, x = trained
    torch.manual_seed(1)
    more = continued_network(model, OLD, OLD + ["fox"], "resnet18", {})
    before, after = _logits(model, x), _logits(more, x)
    assert after.shape == (3, 4)
    assert torch.allclose(after[:, :3], before, atol=1e-5, rtol=0)  # the same weights: float rounding at most
    fresh = head_of(more).weight[3]
    assert not any(torch.allclose(fresh, head_of(model).weight[i]) for i in range(3))
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(more.state_dict()[k], v) for k, v in backbone.items())


def test_rows_follow_the_class_names_and_unknown_old_classes_are_dropped(trained):
    model, x = trained
    new = ["owl", "hare", "cat"]
    moved = continued_network(model, OLD, new, "resnet18", {})
    before, after = _logits(model, x), _logits(moved, x)
    assert torch.allclose(after[:, 0], before[:, 2], atol=1e-5) and torch.allclose(after[:, 2], before[:, 0], atol=1e-5)
    assert class_changes(OLD, new) == {"kept": ["owl", "cat"], "added": ["hare"], "dropped": ["dog"]}


def test_a_new_class_set_replaces_the_head_and_keeps_the_backbone(trained):
    model, _ = trained
    torch.manual_seed(2)
    other = continued_network(model, OLD, ["a", "b"], "resnet18", {})
    torch.manual_seed(2)
    fresh = build_model("resnet18", 2, {})
    assert torch.equal(head_of(other).weight, head_of(fresh).weight)  # torch's own init, from the seeded generator
    assert torch.equal(other.state_dict()["layer4.1.conv2.weight"], model.state_dict()["layer4.1.conv2.weight"])


def test_the_builtins_stacked_head_folds_into_one_layer():
    torch.manual_seed(3)
    stacked = StackedHead(build_backbone("resnet18", {}), 3).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = _logits(stacked, x)
    plain = continued_network(stacked, OLD, OLD, "resnet18", {})
    assert type(plain).__name__ == "ResNet" and head_of(plain).out_features == 3
    assert torch.allclose(_logits(plain, x), expected, atol=1e-4, rtol=1e-5)
    assert folded(build_model("resnet18", 2, {})).fc.out_features == 2  # a plain network is left as it is


def test_densenet_heads_map_by_name_too():
    torch.manual_seed(4)
    model = build_model("densenet121", 2, {}).eval()
    x = torch.randn(1, 3, 32, 32)
    moved = continued_network(model, ["a", "b"], ["b", "a", "c"], "densenet121", {})
    assert torch.allclose(_logits(moved, x)[:, :2], _logits(model, x)[:, [1, 0]], atol=1e-5)


def test_a_network_of_another_architecture_is_refused(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="does not fit"):
        continued_network(model, OLD, OLD, "resnet34", {})


def test_lineage_entry_names_the_weights_it_started_from(tmp_path):
    # Larger than one read chunk, so the hash covers every chunk of the file.
    (tmp_path / "a").write_bytes(b"weights" * 300_000)
    (tmp_path / "b").write_bytes(b"weights" * 300_000 + b"z")
    entry = lineage_entry("resnet18", "designer-resnet", "2026-12-01T00:00:00Z", OLD, tmp_path / "a")
    other = lineage_entry("resnet18", "designer-resnet", "2026-12-01T00:00:00Z", OLD, tmp_path / "b")
    assert entry["weights_sha256"] == hashlib.sha256(b"weights" * 300_000).hexdigest() != other["weights_sha256"]
    assert entry["categories"] == OLD and entry["model_name"] == "resnet18" and entry["writer"] == "designer-resnet"
