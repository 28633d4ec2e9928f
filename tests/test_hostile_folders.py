"""Crafted model folders, data folders and checkpoints: each is one `error:` line, before any cost they could run up."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import LABEL_MAP, MODEL_SPEC, read_trained, read_untrained, write_trained
from designer_resnet.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from designer_resnet.training.state import EpochResult, TrainingState

from conftest import run_module, write_labelled_set

CLASSES = ["a", "b", "c"]
_CHILD_MEMORY = 4 << 30  # address space of a child that reads a hostile folder: a failure, never a swapping machine


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_MEMORY, _CHILD_MEMORY))


def _one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


# --- model folders ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A trained resnet18 folder of ours with three classes and one op from the training files."""
    root = tmp_path_factory.mktemp("trained")
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    untrained = read_untrained(root / "untrained")
    (root / "model").mkdir()
    write_trained(root / "model", untrained.build(len(CLASSES)), untrained, CLASSES,
                  {"transforms": [["Resize", [[8, 8]]]], "from_training_data": 1, "mean": [0.5] * 3, "std": [0.5] * 3})
    return root / "model"


@pytest.fixture
def model(trained_folder, tmp_path):
    """A copy of the trained folder to spoil."""
    shutil.copytree(trained_folder, tmp_path / "model")
    return tmp_path / "model"


def _refused(folder, match: str) -> str:
    with pytest.raises(UserError, match=match) as info:
        read_trained(folder)
    return _one_line(str(info.value))


def _edit_spec(folder, change) -> None:
    spec = yaml.safe_load((folder / MODEL_SPEC).read_text())
    change(spec)
    (folder / MODEL_SPEC).write_text(yaml.safe_dump(spec, sort_keys=False))


def test_the_untouched_folder_reads(model):
    assert read_trained(model).categories == CLASSES


def test_model_spec_with_yaml_aliases_is_refused(model):
    text = (model / MODEL_SPEC).read_text().replace("task_type: MultiClassification",
                                                    "task_type: &t MultiClassification\nalso: *t")
    (model / MODEL_SPEC).write_text(text)
    _refused(model, r"^trained_model: .*model_spec\.yaml uses a YAML alias \(\*name, line \d+\), which port files "
                    r"never need; connect the output of a ResNet, DenseNet or Train PyTorch Model module$")


def test_a_million_row_label_map_is_refused_before_a_head_is_built_for_it(model):
    """The weights have 3 outputs: a 1,000,000-label map must not build a 512 x 1,000,000 head (2 GB) first."""
    with open(model / LABEL_MAP, "w") as f:
        f.write(",label\n" + "".join(f"{i},c{i}\n" for i in range(1_000_000)))
    child = ("import resource, sys\n"
             "from designer_resnet.errors import UserError\n"
             "from designer_resnet.models.model_directory import read_trained\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n"
             f"    read_trained({str(model)!r})\n"
             "except UserError as exc:\n"
             "    print(exc)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited)
    assert done.returncode == 0, done.stderr[-1500:]
    message, grown_mib = done.stdout.splitlines()
    assert message == f"trained_model: {LABEL_MAP} has more labels than the model's 3 outputs; retrain the model"
    assert int(grown_mib) < 200  # the weights of resnet18 (45 MB) and a few label rows, no head


def test_label_map_with_fewer_labels_than_outputs_is_refused(model):
    (model / LABEL_MAP).write_text(",label\n0,a\n1,b\n")
    _refused(model, rf"^trained_model: {LABEL_MAP} has 2 labels but the model has 3 outputs; retrain the model$")


def test_label_map_naming_a_class_twice_is_refused(model):
    """Scored Probabilities_<class> would hold one of the two outputs and drop the other."""
    (model / LABEL_MAP).write_text(",label\n0,a\n1,b\n2,a\n")
    _refused(model, rf"^trained_model: {LABEL_MAP} names the class 'a' twice \(indexes 0 and 2\), so one output "
                    "would have no column; retrain the model$")


@pytest.mark.parametrize("text", ["index\n0\n1\n2\n", ",label\n0,a\n1\n2,c\n"], ids=["no_label_column", "short_row"])
def test_label_map_without_a_label_column_is_refused(model, text):
    (model / LABEL_MAP).write_text(text)
    _refused(model, rf"^trained_model: {LABEL_MAP} must have rows 'index,label'$")


def test_label_map_with_a_field_too_long_for_csv_is_refused(model):
    (model / LABEL_MAP).write_text(",label\n0," + "x" * 200_000 + "\n")
    _refused(model, rf"^trained_model: {LABEL_MAP} cannot be read as CSV \(field larger than field limit")


@pytest.mark.parametrize("value", ["abc", -1, 2, 1.5, [1]])
def test_from_training_data_that_is_not_a_count_of_the_transforms_is_refused(model, value):
    _edit_spec(model, lambda spec: spec["designer_resnet"]["preprocess"].update(from_training_data=value))
    _refused(model, r"^trained_model: model_spec\.yaml preprocess\.from_training_data .* is not a whole number "
                    r"from 0 to 1 \(its transforms\); retrain the model$")


def test_builtin_class_named_by_a_list_is_refused(model):
    def builtin_with_list(spec):
        del spec["designer_resnet"]
        spec["flavor_extras"]["module"] = ["os"]
    _edit_spec(model, builtin_with_list)
    _refused(model, r"^trained_model: the model class \['os'\]\.ResNet is neither ours nor a built-in ResNet")


def test_weights_without_a_classifier_layer_are_refused(model):
    state = torch.load(model / "model", weights_only=True)
    del state["model.fc.weight"]
    torch.save(state, model / "model")
    _refused(model, r"^trained_model: model has no resnet18 classifier layer; retrain the model$")


# --- data folders ----------------------------------------------------------------------------------------------------


def _alias_bomb_meta() -> str:
    """A 600-byte `_meta.yaml` whose pending_transforms expand to 9**9 ops: hours of work for whatever walks them."""
    lines = ["type: ImageDirectory", "image_list: images.lst", "schema: _schema.json", "samples: _samples.json",
             'x0: &x0 ["Resize", [[8, 8]]]']
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 10)]
    lines += ["extension:", "  designer_resnet:", "    pending_transforms: [*x9]"]
    return "\n".join(lines) + "\n"


def test_apply_refuses_an_alias_bomb_in_one_line_at_once(tmp_path):
    from designer_resnet.data.convert import convert_to_image_directory

    write_labelled_set(tmp_path / "raw", 1)
    convert_to_image_directory(tmp_path / "raw", tmp_path / "images")
    (tmp_path / "images" / "_meta.yaml").write_text(_alias_bomb_meta())
    assert run_module("init_image_transformation", "--output_path", tmp_path / "tf").returncode == 0
    command = [sys.executable, "-m", "designer_resnet.components.apply_image_transformation",
               "--input_transformation_path", str(tmp_path / "tf"), "--input_image_path", str(tmp_path / "images"),
               "--mode", "For inference", "--output_path", str(tmp_path / "out")]
    try:  # a child that is still expanding after 20 s (minutes of it on a busy machine) has failed
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail("Apply Image Transformation was still busy with a 600-byte _meta.yaml after 20 s")
    assert done.returncode == 1
    assert done.stderr == (f"error: input_image_path: {tmp_path / 'images' / '_meta.yaml'} uses a YAML alias "
                           "(*name, line 6), which port files never need; connect the output of a designer module "
                           "here\n")
    assert not (tmp_path / "out").exists()


def test_pipeline_yaml_with_aliases_is_refused_by_the_runner(tmp_path):
    from designer_resnet.runner.graph import load_pipeline

    (tmp_path / "p.yml").write_text("settings: &s {default_compute: local}\njobs: {}\nagain: *s\n")
    with pytest.raises(UserError, match=r"^pipeline: .*p\.yml uses a YAML alias \(\*name, line 3\)") as info:
        load_pipeline(tmp_path / "p.yml")
    _one_line(str(info.value))


# --- checkpoints -----------------------------------------------------------------------------------------------------

IDENTITY = {"learning_rate": 0.1, "world_size": 1}


def _parts(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return net, optimizer, scheduler


def _checkpoint(folder, spoil=None) -> None:
    """A checkpoint of this run identity after one epoch, spoiled by `spoil(dict)` as a crafted file would be."""
    net, optimizer, scheduler = _parts()
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = TrainingState(epochs=3, patience=3)
    state.record(EpochResult(1, 0.1, 1.0, 0.5, 10.0, 0.9, 0.5, 0.5), net.state_dict)
    ckpt = state.to_checkpoint(net, optimizer, scheduler, identity=IDENTITY, config={}, model_name="resnet18",
                               categories=CLASSES)
    if spoil:
        spoil(ckpt)
    folder.mkdir(exist_ok=True)
    save_checkpoint(folder / CHECKPOINT, ckpt)


def _refused_on_resume(folder, spoil, problem: str) -> None:
    """A checkpoint spoiled by `spoil` is refused on resume in one line: `checkpoint_path: <problem>; <the fix>`."""
    _checkpoint(folder, spoil)
    with pytest.raises(UserError, match=rf"^checkpoint_path: {problem}; give an empty checkpoint folder to start "
                                        "over$") as info:
        _resume(folder)
    _one_line(str(info.value))


def _resume(folder) -> TrainingState:
    """What Train does with a checkpoint folder: load it for this identity, then restore a fresh run from it."""
    state = TrainingState(epochs=3, patience=3)
    checkpoint = load_checkpoint(folder, IDENTITY)
    state.restore(checkpoint, *_parts(1))
    return state


def test_a_good_checkpoint_resumes(tmp_path):
    _checkpoint(tmp_path)
    assert _resume(tmp_path).epoch == 1


def _drop(key):
    return lambda ckpt: ckpt.pop(key)


def _set(key, value):
    return lambda ckpt: ckpt.update({key: value})


@pytest.mark.parametrize("spoil, problem", [
    (_drop("rng_cpu"), "has no rng_cpu"),
    (_set("best_model", None), "has its best_model as None, not a state dict of tensors"),
    (_set("rng_cpu", torch.zeros(3, dtype=torch.uint8)),
     "has its rng_cpu as a Tensor, not this PyTorch's CPU random state"),
    (_set("history", [{"epoch": 1}]), "has its history as a list, not one result per epoch from epoch 1 on"),
    (_set("best_epoch", 7), "has a best_epoch or stale count beyond its history"),
    (_set("optimizer", [1, 2]), "has its optimizer as a list, not an optimizer state"),
], ids=["no_rng", "best_model_none", "short_rng", "bad_history", "best_epoch_beyond", "optimizer_list"])
def test_checkpoint_of_this_run_missing_or_spoiling_a_key_is_one_line(tmp_path, spoil, problem):
    _refused_on_resume(tmp_path, spoil, rf"the checkpoint in {tmp_path} {problem}.*")


def _wrong_weights(ckpt):
    ckpt["model"]["weight"] = torch.zeros(5, 3)


def _string_lr(ckpt):
    ckpt["optimizer"]["param_groups"][0]["lr"] = "fast"


def _wrong_buffer(ckpt):
    ckpt["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(7)


@pytest.mark.parametrize("spoil, what", [
    (_wrong_weights, "model weights"),
    (_string_lr, "optimizer state"),
    (_wrong_buffer, "optimizer state"),
    (lambda ckpt: ckpt["lr_scheduler"].update(optimizer={}), "schedule"),
    (lambda ckpt: ckpt["lr_scheduler"].update(last_epoch="x"), "schedule"),
    (lambda ckpt: ckpt["lr_scheduler"].update(base_lrs=["x"]), "schedule"),
    (lambda ckpt: ckpt["lr_scheduler"].update(lr_lambdas=[5]), "schedule"),
], ids=["weights_shape", "lr_string", "buffer_shape", "schedule_replaces_optimizer", "schedule_type",
        "schedule_list_item", "schedule_lambda_state"])
def test_checkpoint_whose_parts_do_not_fit_the_run_is_one_line(tmp_path, spoil, what):
    _refused_on_resume(tmp_path, spoil, rf"the checkpoint's {what} does not fit this run \(.*\)")
