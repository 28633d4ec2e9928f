"""Every component spec loads in azure-ai-ml and matches its entry module."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from azure.ai.ml import load_component, load_environment

from conftest import REPO

SPECS = sorted((REPO / "components").glob("*.yaml"))

# name -> (component type, {input: (type, default, extra)}, {output: type}); extra holds min/max/enum/optional
EXPECTED = {
    "convert_to_image_directory": ("CommandComponent", {"input_path": ("AnyDirectory", None, {})},
                                   {"output_path": "ImageDirectory"}),
    "split_image_directory": ("CommandComponent", {
        "input_path": ("ImageDirectory", None, {}),
        "fraction": ("Float", 0.9, {"min": 0.0, "max": 1.0}),
        "random_seed": ("Integer", 42, {"min": 0}),
    }, {"output_path1": "ImageDirectory", "output_path2": "ImageDirectory"}),
    "init_image_transformation": ("CommandComponent", {
        "resize": ("Boolean", True, {}), "size": ("Integer", 256, {"min": 1}),
        "center_crop": ("Boolean", True, {}), "crop_size": ("Integer", 224, {"min": 1}),
        "pad": ("Boolean", False, {}), "padding": ("Integer", 0, {"min": 0}),
        "color_jitter": ("Boolean", False, {}), "grayscale": ("Boolean", False, {}),
        "random_resized_crop": ("Boolean", False, {}), "random_resized_crop_size": ("Integer", 256, {"min": 1}),
        "random_crop": ("Boolean", False, {}), "random_crop_size": ("Integer", 224, {"min": 1}),
        "random_horizontal_flip": ("Boolean", True, {}), "random_vertical_flip": ("Boolean", False, {}),
        "random_rotation": ("Boolean", False, {}), "random_rotation_degrees": ("Integer", 0, {"min": 0, "max": 180}),
        "random_affine": ("Boolean", False, {}), "random_affine_degrees": ("Integer", 0, {"min": 0, "max": 180}),
        "random_grayscale": ("Boolean", False, {}), "random_perspective": ("Boolean", False, {}),
        "random_erasing": ("Boolean", False, {}),
    }, {"output_path": "TransformationDirectory"}),
    "apply_image_transformation": ("CommandComponent", {
        "input_transformation_path": ("TransformationDirectory", None, {}),
        "input_image_path": ("ImageDirectory", None, {}),
        "mode": ("enum", "For inference", {"enum": ["For training", "For inference"]}),
    }, {"output_path": "ImageDirectory"}),
    "resnet": ("CommandComponent", {
        "model_name": ("enum", "resnext101_32x8d", {"enum": [
            "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
            "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]}),
        "pretrained": ("Boolean", True, {}),
        "weights": ("enum", "DEFAULT", {"enum": ["DEFAULT", "IMAGENET1K_V1"]}),
        "zero_init_residual": ("Boolean", False, {}),
        "weights_file": ("AnyDirectory", None, {"optional": True}),
    }, {"output_path": "UntrainedModelDirectory"}),
    "densenet": ("CommandComponent", {
        "model_name": ("enum", "densenet201", {"enum": ["densenet121", "densenet161", "densenet169", "densenet201"]}),
        "pretrained": ("Boolean", True, {}),
        "weights": ("enum", "DEFAULT", {"enum": ["DEFAULT", "IMAGENET1K_V1"]}),
        "memory_efficient": ("Boolean", False, {}),
        "weights_file": ("AnyDirectory", None, {"optional": True}),
    }, {"output_path": "UntrainedModelDirectory"}),
    "train_pytorch_model": ("DistributedComponent", {
        "untrained_model": ("UntrainedModelDirectory", None, {}),
        "training_data": ("ImageDirectory", None, {}),
        "validation_data": ("ImageDirectory", None, {}),
        "epochs": ("Integer", 5, {"min": 1}),
        "batch_size": ("Integer", 16, {"min": 1}),
        "warmup_step_number": ("Integer", 0, {"min": 0}),
        "learning_rate": ("Float", 0.001, {}),
        "random_seed": ("Integer", 1, {}),
        "patience": ("Integer", 3, {"min": 1}),
        "print_frequency": ("Integer", 10, {"min": 1}),
    }, {"trained_model": "ModelDirectory", "checkpoint_path": "AnyDirectory"}),
    "score_image_model": ("CommandComponent", {
        "trained_model": ("ModelDirectory", None, {}),
        "dataset": ("ImageDirectory", None, {}),
        "batch_size": ("Integer", 64, {"min": 1}),
    }, {"scored_dataset": "DataFrameDirectory"}),
    "evaluate_model": ("CommandComponent", {
        "scored_dataset": ("DataFrameDirectory", None, {}),
        "scored_dataset_to_compare": ("DataFrameDirectory", None, {"optional": True}),
    }, {"evaluation_results": "DataFrameDirectory"}),
}


def command_of(component) -> str:
    """The command line: `command`, or a DistributedComponent's launcher arguments."""
    if component.type == "DistributedComponent":
        assert component.launcher["type"] == "pytorch"
        return component.launcher["additional_arguments"]
    return component.command


def test_every_spec_is_covered():
    assert {p.stem for p in SPECS} >= set(EXPECTED)
    assert len(SPECS) >= 9


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_spec_loads_and_validates(spec):
    component = load_component(spec)
    result = component._validate()
    assert result.passed, result.error_messages
    assert component.name == spec.stem
    assert component.display_name and component.description and component.version
    for name, port in {**component.inputs, **component.outputs}.items():
        assert port.description, f"{spec.name}: {name} has no description for the designer UI"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_ports_and_parameters(name):
    component = load_component(REPO / "components" / f"{name}.yaml")
    kind, inputs, outputs = EXPECTED[name]
    assert component.type == kind
    assert set(component.inputs) == set(inputs)
    for key, (typ, default, extra) in inputs.items():
        port = component.inputs[key]
        assert port.type == typ, key
        if isinstance(default, bool):
            assert str(port.default).lower() == str(default).lower(), key
        elif default is not None:
            assert type(default)(port.default) == default, key
        for attr, expected in extra.items():
            assert getattr(port, attr) == expected, (key, attr)
    assert {k: v.type for k, v in component.outputs.items()} == outputs


def _command_flags(command: str) -> list[tuple[str, str]]:
    """(flag, placeholder) pairs of a designer command, optional [...] blocks included."""
    text = command.replace("[", " ").replace("]", " ")
    tokens = shlex.split(text)
    return [(tokens[i], tokens[i + 1]) for i in range(len(tokens) - 1) if tokens[i].startswith("--")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_command_matches_ports_and_entry_module(spec):
    component = load_component(spec)
    command = command_of(component)
    module_name = re.search(r"-m (designer_resnet\.components\.\w+)", command).group(1)
    module = importlib.import_module(module_name)
    parser = module.build_parser()
    accepted = {opt for action in parser._actions for opt in action.option_strings}
    placeholders = set(re.findall(r"\{(inputs|outputs)\.(\w+)\}", command))
    declared = {("inputs", k) for k in component.inputs} | {("outputs", k) for k in component.outputs}
    assert placeholders == declared, "every port appears in the command and nothing else"
    for flag, value in _command_flags(command):
        assert flag in accepted, f"{spec.name}: {flag} is not accepted by {module_name}"
        assert re.fullmatch(r"\{(inputs|outputs)\.\w+\}", value), (flag, value)
    assert (spec.parent / component.code).resolve() == (REPO / "src").resolve()
    assert (REPO / "src" / "designer_resnet" / "components" / f"{module_name.rsplit('.', 1)[1]}.py").exists()


def test_a_broken_spec_fails_validation(tmp_path):
    """The loader is a real judge: a missing code folder, conda file or port type fails."""
    from marshmallow.exceptions import ValidationError

    text = (REPO / "components" / "split_image_directory.yaml").read_text()
    (tmp_path / "components").mkdir()
    bad = tmp_path / "components" / "split_image_directory.yaml"
    bad.write_text(text)
    with pytest.raises(ValidationError, match="code"):
        load_component(bad)
    (tmp_path / "src").mkdir()
    assert load_component(bad)._validate().passed
    env_start = text.index("environment:")
    env_end = text.index("command:")
    bad.write_text(text[:env_start] + "environment:\n  conda:\n    conda_dependencies_file: missing.yaml\n"
                   + text[env_end:])
    result = load_component(bad)._validate()
    assert not result.passed and "conda_dependencies_file" in str(result.error_messages)
    bad.write_text(text.replace("type: Float", "type: Floaty"))
    with pytest.raises(ValidationError, match="Floaty"):
        load_component(bad)


def test_spec_environments_match_the_environments_folder():
    """Every spec carries environments/conda.yaml and the base image inline (see environments/sync_specs.py)."""
    import yaml

    conda = yaml.safe_load((REPO / "environments" / "conda.yaml").read_text())
    image = yaml.safe_load((REPO / "environments" / "designer-resnet.yaml").read_text())["image"]
    for spec in SPECS:
        env = yaml.safe_load(spec.read_text())["environment"]
        assert env["conda"]["conda_dependencies"] == conda, f"{spec.name}: run python environments/sync_specs.py"
        assert env["docker"]["image"] == image, spec.name
    check = subprocess.run([sys.executable, str(REPO / "environments" / "sync_specs.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_mldesigner_compile_packages_every_spec_with_its_code(tmp_path):
    env = {**os.environ, "AZURE_ML_INTERNAL_COMPONENTS_ENABLED": "true"}
    mldesigner = Path(sys.executable).parent / "mldesigner"
    result = subprocess.run([str(mldesigner), "compile", "--source", str(REPO / "components" / "*.yaml"),
                             "--output", str(tmp_path / "compiled")], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    compiled = sorted((tmp_path / "compiled").iterdir())
    assert [p.name for p in compiled] == [p.stem for p in SPECS]
    for folder in compiled:
        component = load_component(folder / f"{folder.name}.yaml")
        validation = component._validate()
        assert validation.passed, (folder.name, validation.error_messages)
        assert (folder / "designer_resnet" / "errors.py").exists()
        assert not list(folder.glob("*.egg-info")) and not list(folder.rglob("__pycache__"))
    # The snapshot runs on its own, as it will on a compute node.
    run = subprocess.run([sys.executable, "-m", "designer_resnet.components.split_image_directory", "--help"],
                         cwd=tmp_path / "compiled" / "split_image_directory", capture_output=True, text=True,
                         env={k: v for k, v in env.items() if k != "PYTHONPATH"}, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("usage: split_image_directory")


def test_environment_asset_loads():
    env = load_environment(REPO / "environments" / "designer-resnet.yaml")
    assert env.name == "designer-resnet" and "cuda" in env.image
    assert "torchvision>=0.29" in (REPO / "environments" / "conda.yaml").read_text()


def test_train_component_works_as_a_distributed_pipeline_node():
    """Built with the SDK, the chain validates and the train node takes a multi-node PyTorch distribution."""
    import azure.ai.ml._internal  # noqa: F401  (registers internal node types for pipelines)
    from azure.ai.ml import Input, dsl

    convert, split, resnet, trainer = (load_component(REPO / "components" / f"{n}.yaml") for n in (
        "convert_to_image_directory", "split_image_directory", "resnet", "train_pytorch_model"))

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
        return {"model": trained.outputs.trained_model}

    job = chain(images=Input(type="uri_folder", path="azureml://datastores/workspaceblobstore/paths/images/"))
    result = job._validate()
    assert result.passed, result.error_messages
    node = job.jobs["trained"]
    assert node.distribution.process_count_per_instance == 4 and node.resources["instance_count"] == 2
