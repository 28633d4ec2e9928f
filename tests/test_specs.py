"""Both flavours of every component spec: azure-ai-ml loads them, they agree, and they match their entry modules.

v2 specs are checked with AZURE_ML_INTERNAL_COMPONENTS_ENABLED unset, designer-typed
ones with it set, each in a process of its own (tests/spec_probe.py).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_component, load_environment

from designer_resnet.component_source import build_parser
from designer_resnet.specs import (
    TYPED_SUFFIX, V2_PARAM_TYPE as V2_PARAM, V2_PORT_TYPE, command_template, placeholders, port_kinds, port_name, port_type,
    render)

from conftest import REPO

FLAG = "AZURE_ML_INTERNAL_COMPONENTS_ENABLED"
SOURCES = sorted((REPO / "src" / "designer_resnet" / "components").glob("*.yaml"))
NAMES = [p.stem for p in SOURCES]
V2_DIR, TYPED_DIR = REPO / "components", REPO / "components" / "typed"

# name -> (distributed, {input: (designer type, default, extra)}, {output: designer type}); extra: min/max/enum/optional
EXPECTED = {
    "convert_to_image_directory": (False, {
        "input_path": ("AnyDirectory", None, {}),
        "datastore_path": ("AnyDirectory", None, {"optional": True}),
        "max_extracted_gb": ("Float", 50.0, {"min": 0.000001, "max": 1000000.0}),
    }, {"output_path": "ImageDirectory"}),
    "split_image_directory": (False, {
        "input_path": ("ImageDirectory", None, {}),
        "fraction": ("Float", 0.9, {"min": 0.0, "max": 1.0}),
        "random_seed": ("Integer", 42, {"min": 0}),
    }, {"output_path1": "ImageDirectory", "output_path2": "ImageDirectory"}),
    "init_image_transformation": (False, {
        "resize": ("Boolean", True, {}), "size": ("Integer", 256, {"min": 1}),
        "center_crop": ("Boolean", True, {}), "crop_size": ("Integer", 224, {"min": 1}),
        "pad": ("Boolean", False, {}), "padding": ("Integer", 0, {"min": 0}),
        "color_jitter": ("Boolean", False, {}), "grayscale": ("Boolean", False, {}),
        "random_resized_crop": ("Boolean", False, {}), "random_resized_crop_size": ("Integer", 256, {"min": 1}),
        "random_crop": ("Boolean", False, {}), "random_crop_size": ("Integer", 224, {"min": 1}),
        "random_horizontal_flip": ("Boolean", True, {}), "random_vertical_flip": ("Boolean", False, {}),
        "policy_augmentation": ("Enum", "None", {"enum": ["None", "AutoAugment", "RandAugment",
                                                          "TrivialAugmentWide", "AugMix"]}),
        "auto_augment_policy": ("Enum", "imagenet", {"enum": ["imagenet", "cifar10", "svhn"]}),
        "rand_augment_num_ops": ("Integer", 2, {"min": 1, "max": 16}),
        "rand_augment_magnitude": ("Integer", 9, {"min": 0, "max": 255}),
        "num_magnitude_bins": ("Integer", 31, {"min": 2, "max": 256}),
        "augmix_severity": ("Integer", 3, {"min": 1, "max": 10}),
        "augmix_mixture_width": ("Integer", 3, {"min": 1, "max": 16}),
        "augmix_chain_depth": ("Integer", -1, {"min": -1, "max": 16}),
        "augmix_alpha": ("Float", 1.0, {"min": 0.01, "max": 10.0}),
        "random_rotation": ("Boolean", False, {}), "random_rotation_degrees": ("Integer", 0, {"min": 0, "max": 180}),
        "random_affine": ("Boolean", False, {}), "random_affine_degrees": ("Integer", 0, {"min": 0, "max": 180}),
        "random_grayscale": ("Boolean", False, {}), "random_perspective": ("Boolean", False, {}),
        "random_erasing": ("Boolean", False, {}),
    }, {"output_path": "TransformationDirectory"}),
    "apply_image_transformation": (False, {
        "input_transformation_path": ("TransformationDirectory", None, {}),
        "input_image_path": ("ImageDirectory", None, {}),
        "mode": ("Enum", "For inference", {"enum": ["For training", "For inference"]}),
        "lossless": ("Boolean", False, {}),
    }, {"output_path": "ImageDirectory"}),
    "resnet": (False, {
        "model_name": ("Enum", "resnext101_32x8d", {"enum": [
            "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
            "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]}),
        "pretrained": ("Boolean", True, {}),
        "weights": ("Enum", "DEFAULT", {"enum": ["DEFAULT", "IMAGENET1K_V1"]}),
        "zero_init_residual": ("Boolean", False, {}),
        "weights_file": ("AnyDirectory", None, {"optional": True}),
    }, {"output_path": "UntrainedModelDirectory"}),
    "densenet": (False, {
        "model_name": ("Enum", "densenet201", {"enum": ["densenet121", "densenet161", "densenet169", "densenet201"]}),
        "pretrained": ("Boolean", True, {}),
        "weights": ("Enum", "DEFAULT", {"enum": ["DEFAULT", "IMAGENET1K_V1"]}),
        "memory_efficient": ("Boolean", False, {}),
        "weights_file": ("AnyDirectory", None, {"optional": True}),
    }, {"output_path": "UntrainedModelDirectory"}),
    "train_pytorch_model": (True, {
        "untrained_model": ("UntrainedModelDirectory or ModelDirectory", None, {}),
        "training_data": ("ImageDirectory", None, {}),
        "validation_data": ("ImageDirectory", None, {}),
        "model_name": ("Enum", None, {"optional": True, "enum": [
            "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
            "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
            "densenet121", "densenet161", "densenet169", "densenet201"]}),
        "epochs": ("Integer", 5, {"min": 1}),
        "batch_size": ("Integer", 16, {"min": 1}),
        "warmup_step_number": ("Integer", 0, {"min": 0}),
        "learning_rate": ("Float", 0.001, {}),
        "random_seed": ("Integer", 1, {}),
        "patience": ("Integer", 3, {"min": 1}),
        "print_frequency": ("Integer", 10, {"min": 1}),
        "sync_batch_norm": ("Boolean", False, {}),
        "precision": ("Enum", "auto", {"enum": ["auto", "bf16", "fp32"]}),
        "memory_format": ("Enum", "auto", {"enum": ["auto", "channels_last", "contiguous"]}),
        "compile": ("Boolean", False, {}),
        "jpeg_decode": ("Enum", "auto", {"enum": ["auto", "device", "workers"]}),
        "optimizer": ("Enum", "sgd", {"enum": ["sgd", "adam", "adamw"]}),
        "momentum": ("Float", 0.9, {"min": 0.0, "max": 0.999}),
        "nesterov": ("Boolean", True, {}),
        "beta1": ("Float", 0.9, {"min": 0.0, "max": 0.9999}),
        "beta2": ("Float", 0.999, {"min": 0.0, "max": 0.99999}),
        "weight_decay": ("Float", 0.0001, {"min": 0.0, "max": 1.0}),
        "weight_decay_on_norms_and_biases": ("Boolean", True, {}),
        "lr_schedule": ("Enum", "polynomial", {"enum": ["polynomial", "cosine", "step"]}),
        "lr_step_epochs": ("Integer", 30, {"min": 1, "max": 10000}),
        "lr_step_gamma": ("Float", 0.1, {"min": 0.000001, "max": 1.0}),
        "label_smoothing": ("Float", 0.0, {"min": 0.0, "max": 0.5}),
        "mixup_alpha": ("Float", 0.0, {"min": 0.0, "max": 10.0}),
        "cutmix_alpha": ("Float", 0.0, {"min": 0.0, "max": 10.0}),
        "mix_probability": ("Float", 1.0, {"min": 0.0, "max": 1.0}),
        "ema_decay": ("Float", 0.0, {"min": 0.0, "max": 0.99999}),
        "gradient_clip_norm": ("Float", 0.0, {"min": 0.0, "max": 1000000.0}),
        "gradient_accumulation_steps": ("Integer", 1, {"min": 1, "max": 1024}),
        "weighted_loss": ("Enum", "none", {"enum": ["none", "inverse_frequency"]}),
        "freeze": ("Enum", "none", {"enum": ["none", "backbone", "first_stages"]}),
        "freeze_stages": ("Integer", 1, {"min": 0, "max": 4}),
    }, {"trained_model": "ModelDirectory", "checkpoint_path": "AnyDirectory"}),
    "score_image_model": (False, {
        "trained_model": ("ModelDirectory", None, {}),
        "dataset": ("ImageDirectory", None, {}),
        "batch_size": ("Integer", 64, {"min": 1}),
        "precision": ("Enum", "auto", {"enum": ["auto", "bf16", "fp32"]}),
        "memory_format": ("Enum", "auto", {"enum": ["auto", "channels_last", "contiguous"]}),
    }, {"scored_dataset": "DataFrameDirectory"}),
    "merge_scored_parts": (False, {
        "scored_parts": ("AnyDirectory", None, {}),
        "dataset": ("ImageDirectory", None, {}),
    }, {"scored_dataset": "DataFrameDirectory"}),
    "evaluate_model": (False, {
        "scored_dataset": ("DataFrameDirectory", None, {}),
        "scored_dataset_to_compare": ("DataFrameDirectory", None, {"optional": True}),
    }, {"evaluation_results": "DataFrameDirectory"}),
}
DISPLAY = {"convert_to_image_directory": "Convert to Image Directory", "split_image_directory": "Split Image Directory",
           "init_image_transformation": "Init Image Transformation",
           "apply_image_transformation": "Apply Image Transformation", "resnet": "ResNet", "densenet": "DenseNet",
           "train_pytorch_model": "Train PyTorch Model", "score_image_model": "Score Image Model",
           "merge_scored_parts": "Merge Scored Parts", "evaluate_model": "Evaluate Model"}


def probe(flavour: str, flag: bool) -> dict:
    """What azure-ai-ml reads from one flavour, in a fresh process with the private flag set or unset."""
    env = {k: v for k, v in os.environ.items() if k != FLAG}
    if flag:
        env[FLAG] = "true"
    result = subprocess.run([sys.executable, str(REPO / "tests" / "spec_probe.py"), flavour], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def v2() -> dict:
    return probe("v2", flag=False)


@pytest.fixture(scope="module")
def typed() -> dict:
    return probe("typed", flag=True)


def _raw(flavour_dir: Path, name: str) -> dict:
    return yaml.safe_load((flavour_dir / f"{name}.yaml").read_text())


def test_every_component_has_a_source_and_both_flavours():
    assert sorted(NAMES) == sorted(EXPECTED) and len(NAMES) == 10
    assert sorted(p.stem for p in V2_DIR.glob("*.yaml")) == sorted(NAMES)
    assert sorted(p.stem for p in TYPED_DIR.glob("*.yaml")) == sorted(NAMES)


def test_v2_specs_and_pipeline_validate_without_the_private_flag(v2):
    assert v2["flag"] is None
    assert v2["load_errors"] == {}
    assert sorted(v2["specs"]) == sorted(NAMES)
    for name, spec in v2["specs"].items():
        assert spec["valid"], (name, spec["errors"])
        assert spec["type"] == "command" and spec["name"] == name and spec["display_name"] == DISPLAY[name]
        for port_name, port in {**spec["inputs"], **spec["outputs"]}.items():
            assert port["description"], f"{name}: {port_name} has no description for the designer UI"
    pipeline = v2["pipeline"]
    assert pipeline["valid"], pipeline["errors"]
    assert list(pipeline["jobs"]) == ["convert_train", "convert_test", "init_transformation", "transform_train",
                                      "transform_test", "split", "resnet", "train", "score", "evaluate"]
    assert set(pipeline["jobs"].values()) == {"command"}


def test_typed_specs_and_pipeline_validate_with_the_private_flag(typed):
    assert typed["flag"] == "true"
    assert typed["load_errors"] == {}
    for name, spec in typed["specs"].items():
        assert spec["valid"], (name, spec["errors"])
        assert spec["name"] == f"{name}{TYPED_SUFFIX}" and spec["display_name"] == DISPLAY[name]
        assert spec["type"] == ("DistributedComponent" if EXPECTED[name][0] else "CommandComponent")
    assert typed["pipeline"]["valid"], typed["pipeline"]["errors"]
    assert typed["pipeline"]["jobs"]["train"] == "DistributedComponent"


def test_typed_specs_are_what_needs_the_private_flag():
    """Without the flag azure-ai-ml refuses the typed specs; the v2 ones above needed nothing."""
    unflagged = probe("typed", flag=False)
    assert sorted(unflagged["load_errors"]) == sorted(NAMES)
    assert all("private feature" in e for e in unflagged["load_errors"].values())


@pytest.mark.parametrize("name", NAMES)
def test_ports_and_parameters(name, v2, typed):
    distributed, inputs, outputs = EXPECTED[name]
    t, v = typed["specs"][name], v2["specs"][name]
    assert set(t["inputs"]) == set(v["inputs"]) == set(inputs)
    assert set(t["outputs"]) == set(v["outputs"]) == set(outputs)
    for key, (kind, default, extra) in inputs.items():
        # azure-ai-ml reads Enum as "enum"; an input taking several folder types keeps them as a list
        assert port_name(t["inputs"][key]["type"]).lower() == kind.lower(), key
        if kind in V2_PARAM:
            assert v["inputs"][key]["type"] == V2_PARAM[kind], key
        else:
            v2_types = {V2_PORT_TYPE.get(k, "uri_folder") for k in port_kinds(kind)}
            assert v["inputs"][key]["type"] == (v2_types.pop() if len(v2_types) == 1 else "uri_folder"), key
            assert f"Designer type: {kind}." in v["inputs"][key]["description"]
            assert port_type(_raw(V2_DIR, name), "inputs", key) == kind, key  # what the local runner checks
        for spec in (t, v):
            if isinstance(default, bool):
                assert str(spec["inputs"][key]["default"]).lower() == str(default).lower(), key
            elif default is not None:
                assert type(default)(spec["inputs"][key]["default"]) == default, key
            for attr, expected in extra.items():
                got = spec["inputs"][key][attr]
                assert (float(got) if attr in ("min", "max") else got) == expected, (key, attr)
    for key, kind in outputs.items():
        assert t["outputs"][key]["type"] == kind
        assert v["outputs"][key]["type"] == V2_PORT_TYPE.get(kind, "uri_folder")
        assert port_type(_raw(V2_DIR, name), "outputs", key) == kind
    assert (v["distribution"] == "pytorch") == distributed
    assert t["command"].startswith("pytorch | ") == distributed


def _values(spec: dict, with_optional: bool) -> dict[str, str]:
    """A value for every port, the way Azure renders them (booleans True/False)."""
    values = {}
    for direction in ("inputs", "outputs"):
        for key, port in spec[direction].items():
            if port.get("optional") and not with_optional:
                continue
            default = port.get("default")
            values[f"{direction}.{key}"] = (f"/mnt/{direction}/{key}" if default is None
                                            else str(default).capitalize() if str(default).lower() in ("true", "false")
                                            else str(default))
    return values


@pytest.mark.parametrize("name", NAMES)
def test_flavours_declare_the_same_ports_parameters_defaults_and_commands(name, v2, typed):
    t, v = typed["specs"][name], v2["specs"][name]
    assert (t["display_name"], t["description"], t["version"]) == (v["display_name"], v["description"], v["version"])
    for direction in ("inputs", "outputs"):
        for key in t[direction]:
            a, b = dict(t[direction][key]), dict(v[direction][key])
            a.pop("type"), b.pop("type")
            for attr in ("default", "min", "max"):
                a[attr] = None if a[attr] is None else str(a[attr]).lower().rstrip("0").rstrip(".")
                b[attr] = None if b[attr] is None else str(b[attr]).lower().rstrip("0").rstrip(".")
            a["optional"], b["optional"] = bool(a["optional"]), bool(b["optional"])
            assert a == b, (name, direction, key)
    typed_template = t["command"].split(" | ", 1)[-1]
    for with_optional in (True, False):
        values = _values(v, with_optional)
        assert render(typed_template, "typed", values) == render(v["command"], "v2", values)


@pytest.mark.parametrize("flavour_dir", [V2_DIR, TYPED_DIR], ids=["v2", "typed"])
@pytest.mark.parametrize("name", NAMES)
def test_command_matches_ports_and_entry_module(name, flavour_dir):
    spec = _raw(flavour_dir, name)
    kind = "typed" if flavour_dir == TYPED_DIR else "v2"
    command = command_template(spec)
    module_name = re.search(r"-m (designer_resnet\.components\.\w+)", command).group(1)
    assert module_name == f"designer_resnet.components.{name}"  # its parser is built from this component's source
    importlib.import_module(module_name)
    parser = build_parser(name)
    accepted = {opt for action in parser._actions for opt in action.option_strings}
    declared = {("inputs", k) for k in spec["inputs"]} | {("outputs", k) for k in spec["outputs"]}
    assert placeholders(command, kind) == declared, "every port appears in the command and nothing else"
    argv = render(command, kind, {f"{d}.{k}": "VALUE" for d, k in declared})
    flags = [token for token in argv if token.startswith("--")]
    assert flags and all(flag in accepted for flag in flags), (flags, sorted(accepted))
    assert argv.count("VALUE") == len(declared)
    assert (flavour_dir / spec["code"]).resolve() == (REPO / "src").resolve()


def test_generated_files_are_up_to_date():
    check = subprocess.run([sys.executable, str(REPO / "components" / "generate.py"), "--check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout


def _copy_for_generation(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("components", "pipelines", "environments"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src" / "designer_resnet" / "components", root / "src" / "designer_resnet" / "components",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for module in ("__init__.py", "specs.py", "errors.py", "process.py", "arguments.py", "component_source.py"):
        shutil.copy(REPO / "src" / "designer_resnet" / module, root / "src" / "designer_resnet" / module)
    return root


def test_generator_check_fails_on_a_changed_source_or_a_hand_edit(tmp_path):
    root = _copy_for_generation(tmp_path)
    generate = [sys.executable, str(root / "components" / "generate.py")]
    assert subprocess.run([*generate, "--check"], capture_output=True, timeout=120).returncode == 0
    source = root / "src" / "designer_resnet" / "components" / "resnet.yaml"
    source.write_text(source.read_text().replace("The architecture (default", "The network (default"))
    stale = subprocess.run([*generate, "--check"], capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1
    assert "stale: components/resnet.yaml" in stale.stdout and "stale: components/typed/resnet.yaml" in stale.stdout
    assert subprocess.run(generate, capture_output=True, timeout=120).returncode == 0
    assert subprocess.run([*generate, "--check"], capture_output=True, timeout=120).returncode == 0
    for spec in (root / "components" / "resnet.yaml", root / "components" / "typed" / "resnet.yaml"):
        assert yaml.safe_load(spec.read_text())["inputs"]["model_name"]["description"].startswith("The network")
    edited = root / "components" / "typed" / "split_image_directory.yaml"
    edited.write_text(edited.read_text().replace("default: 0.9", "default: 0.8"))
    assert subprocess.run([*generate, "--check"], capture_output=True, timeout=120).returncode == 1


def test_a_broken_v2_spec_fails_validation(tmp_path):
    """The loader is a real judge: a missing code folder, an unknown type or placeholder fails."""
    from marshmallow.exceptions import ValidationError

    text = (V2_DIR / "split_image_directory.yaml").read_text()
    (tmp_path / "components").mkdir()
    bad = tmp_path / "components" / "split_image_directory.yaml"
    bad.write_text(text)
    with pytest.raises(ValidationError, match="code"):
        load_component(bad)
    (tmp_path / "src").mkdir()
    assert load_component(bad)._validate().passed
    bad.write_text(text.replace("type: number", "type: numbery"))
    with pytest.raises(ValidationError, match="numbery"):
        load_component(bad)
    bad.write_text(text.replace("${{inputs.fraction}}", "${{inputs.fractions}}"))
    result = load_component(bad)._validate()
    assert not result.passed and "inputs.fractions" in str(result.error_messages)


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = str(line).split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"not an exact pin: {line!r}"
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def test_environment_is_the_tested_set_exactly_and_a_current_image():
    conda = yaml.safe_load((REPO / "environments" / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    pinned = _pins(pip)
    assert pinned == _pins((REPO / "environments" / "requirements.txt").read_text().splitlines())
    assert {"torch", "torchvision", "mlflow", "azureml-mlflow", "pillow", "pandas"} <= set(pinned)
    python = next(d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=" + ".".join(map(str, sys.version_info[:3]))
    # Every pin is the version installed here, and nothing the runtime needs is left floating.
    check = subprocess.run([sys.executable, str(REPO / "environments" / "lock.py"), "--check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    from importlib.metadata import version

    assert pinned["torch"] == version("torch") and pinned["mlflow"] == version("mlflow")
    env = load_environment(REPO / "environments" / "designer-resnet.yaml")
    assert re.fullmatch(r"mcr\.microsoft\.com/azureml/openmpi5\.0-cuda\d+\.\d+-ubuntu2[24]\.04:\w+", env.image)
    for name in NAMES:
        v2_env, typed_env = _raw(V2_DIR, name)["environment"], _raw(TYPED_DIR, name)["environment"]
        assert v2_env == {"image": env.image, "conda_file": conda}
        assert typed_env["docker"]["image"] == env.image and typed_env["conda"]["conda_dependencies"] == conda


def test_mldesigner_compile_packages_every_v2_spec_with_its_code(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (FLAG, "PYTHONPATH")}
    mldesigner = Path(sys.executable).parent / "mldesigner"
    result = subprocess.run([str(mldesigner), "compile", "--source", str(V2_DIR / "*.yaml"),
                             "--output", str(tmp_path / "compiled")], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    compiled = sorted((tmp_path / "compiled").iterdir())
    assert [p.name for p in compiled] == sorted(NAMES)
    for folder in compiled:
        component = load_component(folder / f"{folder.name}.yaml")
        validation = component._validate()
        assert validation.passed, (folder.name, validation.error_messages)
        assert component.type == "command" and component.environment.image.startswith("mcr.microsoft.com/azureml/")
        assert (folder / "designer_resnet" / "errors.py").exists()
        assert not list(folder.glob("*.egg-info")) and not list(folder.rglob("__pycache__"))
    # The snapshot runs on its own, as it will on a compute node.
    run = subprocess.run([sys.executable, "-m", "designer_resnet.components.split_image_directory", "--help"],
                         cwd=tmp_path / "compiled" / "split_image_directory", capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("usage: split_image_directory")


def test_v2_train_component_works_as_a_distributed_pipeline_node():
    """Built with the SDK and no private flag, the chain validates and the train node takes a multi-node PyTorch distribution."""
    from azure.ai.ml import Input, dsl

    assert FLAG not in os.environ
    convert, split, resnet, trainer, scorer = (load_component(V2_DIR / f"{n}.yaml") for n in (
        "convert_to_image_directory", "split_image_directory", "resnet", "train_pytorch_model", "score_image_model"))

    @dsl.pipeline(default_compute="cpu-cluster")
    def chain(images):
        converted = convert(input_path=images)
        parts = split(input_path=converted.outputs.output_path, fraction=0.8)
        untrained = resnet(model_name="resnet18", pretrained=False)
        trained = trainer(untrained_model=untrained.outputs.output_path, training_data=parts.outputs.output_path1,
                          validation_data=parts.outputs.output_path2)
        trained.compute = "gpu-cluster"
        trained.resources = {"instance_count": 2}
        trained.distribution = {"type": "pytorch", "process_count_per_instance": 4}
        scored = scorer(trained_model=trained.outputs.trained_model, dataset=parts.outputs.output_path2)
        return {"model": trained.outputs.trained_model, "scored": scored.outputs.scored_dataset}

    job = chain(images=Input(type="uri_folder", path="azureml://datastores/workspaceblobstore/paths/images/"))
    result = job._validate()
    assert result.passed, result.error_messages
    node = job.jobs["trained"]
    assert node.distribution.process_count_per_instance == 4 and node.resources.instance_count == 2
    assert job.outputs["model"].type == "mlflow_model"
