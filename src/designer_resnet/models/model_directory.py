"""UntrainedModelDirectory and ModelDirectory (FORMATS.md), with an allowlist on load.

Nothing a model folder says is imported or executed: `flavor.module`/`class`
must name one of our families, and tensors are read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from ..directories.meta import read_meta, write_meta
from ..errors import UserError
from .registry import FAMILIES, IMAGENET_MEAN, IMAGENET_STD, build_model, family_of, load_weights

MODEL_SPEC = "model_spec.yaml"
MODEL_FILE = "model.pt"
PRETRAINED_FILE = "pretrained_weights.pth"
LABEL_MAP = "index_to_label.csv"
MODULE = "designer_resnet.models.registry"
PREPROCESSOR_MODULE = "designer_resnet.transforms.ops"
PREPROCESSOR_CLASS = "tensor_pipeline"
ALLOWED = {(MODULE, family) for family in FAMILIES}


@dataclass
class UntrainedModel:
    family: str
    init_params: dict
    weights_path: Path | None

    @property
    def model_name(self) -> str:
        return self.init_params["model_name"]

    def build(self, num_classes: int) -> nn.Module:
        state = load_weights(self.weights_path, what="untrained model weights") if self.weights_path else None
        params = self.init_params
        return build_model(params["model_name"], num_classes, pretrained_state=state,
                           zero_init_residual=bool(params.get("zero_init_residual", False)),
                           memory_efficient=bool(params.get("memory_efficient", False)))


def _spec_header(family: str, init_params: dict) -> dict:
    return {"flavor": {"name": "pytorch", "serialization_method": "state_dict", "module": MODULE, "class": family,
                       "init_params": init_params},
            "task_type": "MultiClassification",
            "time_created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_untrained(path: Path, init_params: dict, weights_file: Path | None) -> None:
    """Record what to build; a copy of the resolved pretrained weights travels with it."""
    family = family_of(init_params["model_name"])
    spec = _spec_header(family, init_params)
    if weights_file is not None:
        shutil.copyfile(weights_file, path / PRETRAINED_FILE)
        spec["pretrained_weights_file"] = PRETRAINED_FILE
    with open(path / MODEL_SPEC, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    write_meta(path, {"type": "ModelDirectory", "model": MODEL_SPEC})


def _read_spec(path: Path, port: str, input_name: str) -> dict:
    meta = read_meta(path, port, input_name=input_name)
    spec_path = path / str(meta.get("model", MODEL_SPEC))
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{input_name}: {spec_path.name} is missing from {path}; connect a model made by this package") from None
    except yaml.YAMLError:
        raise UserError(f"{input_name}: {spec_path.name} is not valid YAML; connect a model made by this package") from None
    flavor = spec.get("flavor") if isinstance(spec, dict) else None
    if not isinstance(flavor, dict) or (flavor.get("module"), flavor.get("class")) not in ALLOWED:
        found = f"{flavor.get('module')}.{flavor.get('class')}" if isinstance(flavor, dict) else "nothing"
        raise UserError(f"{input_name}: the model class {found} is not one of ours "
                        f"({', '.join(sorted(f'{m}.{c}' for m, c in ALLOWED))}); connect the ResNet or DenseNet module's output")
    params = flavor.get("init_params") or {}
    try:
        if family_of(str(params.get("model_name"))) != flavor["class"]:
            raise UserError(f"{input_name}: model_name {params.get('model_name')!r} is not a {flavor['class']}")
    except UserError as exc:
        raise UserError(f"{input_name}: {exc}") from None
    return spec


def _inside(path: Path, name: str, input_name: str) -> Path:
    from ..directories.image_directory import safe_relative_path

    return path / safe_relative_path(str(name), what=input_name)


def read_untrained(path: str | Path, *, input_name: str = "input_model_path") -> UntrainedModel:
    """An UntrainedModelDirectory; a trained model connected here is refused."""
    path = Path(path)
    spec = _read_spec(path, "UntrainedModelDirectory", input_name)
    if spec.get("model_file"):
        raise UserError(f"{input_name}: {path} is a trained model; connect the output of the ResNet or DenseNet module")
    weights = spec.get("pretrained_weights_file")
    weights_path = _inside(path, weights, input_name) if weights else None
    if weights_path is not None and not weights_path.is_file():
        raise UserError(f"{input_name}: {weights} is missing from {path}; rerun the ResNet module")
    return UntrainedModel(spec["flavor"]["class"], dict(spec["flavor"]["init_params"]), weights_path)


@dataclass
class TrainedModel:
    model: nn.Module
    categories: list[str]
    preprocess: dict  # init_params of the pre-processor: mean, std, pending_transforms
    spec: dict


def write_trained(path: Path, model: nn.Module, untrained: UntrainedModel, categories: list[str],
                  preprocess: dict, example: torch.Tensor, extra: dict | None = None) -> None:
    """A trained ModelDirectory: state dict, label map, pre-processing; also an MLflow model.

    `example` is a pre-processed input batch (N×3×H×W, N ≥ 2) for MLflow's signature.
    """
    import mlflow.pytorch

    model = model.to("cpu").eval()
    scratch = path / ".mlflow-export"  # inside the output, so a failure's clean-up removes it too
    mlflow.pytorch.save_model(model, str(scratch), input_example=example.numpy(),
                              pip_requirements=["torch", "torchvision"])
    for child in scratch.iterdir():
        shutil.move(str(child), path / child.name)
    scratch.rmdir()
    torch.save(model.state_dict(), path / MODEL_FILE)
    with open(path / LABEL_MAP, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", "label"])
        for i, name in enumerate(categories):
            writer.writerow([i, name])
    spec = _spec_header(untrained.family, {**untrained.init_params, "num_classes": len(categories)})
    spec.update({
        "model_file": MODEL_FILE,
        "label_map_file": LABEL_MAP,
        "inputs": [{"name": "image", "pre_processor": {"module": PREPROCESSOR_MODULE, "class": PREPROCESSOR_CLASS,
                                                       "init_params": preprocess}}],
        "conda_file": "conda.yaml",
    })
    if extra:
        spec["training"] = extra
    with open(path / MODEL_SPEC, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    write_meta(path, {"type": "ModelDirectory", "model": MODEL_SPEC})


def default_preprocess(pending: list | None = None) -> dict:
    """Pre-processing init_params: deferred deterministic ops, then ImageNet normalisation."""
    return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "transforms": pending or []}


def read_trained(path: str | Path, *, input_name: str = "trained_model") -> TrainedModel:
    """Load a trained ModelDirectory of ours, with no code execution."""
    path = Path(path)
    spec = _read_spec(path, "ModelDirectory", input_name)
    if not spec.get("model_file"):
        raise UserError(f"{input_name}: {path} is an untrained model; train it with Train PyTorch Model first")
    categories = _read_label_map(_inside(path, spec.get("label_map_file", LABEL_MAP), input_name), input_name)
    params = spec["flavor"]["init_params"]
    model = build_model(params["model_name"], len(categories),
                        zero_init_residual=bool(params.get("zero_init_residual", False)),
                        memory_efficient=bool(params.get("memory_efficient", False)))
    state = load_weights(_inside(path, spec["model_file"], input_name), what=input_name)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"{input_name}: {spec['model_file']} does not match {params['model_name']} with "
                        f"{len(categories)} classes; retrain the model") from None
    inputs = spec.get("inputs") or [{}]
    preprocess = (inputs[0].get("pre_processor") or {}).get("init_params") or default_preprocess()
    return TrainedModel(model.eval(), categories, preprocess, spec)


def _read_label_map(path: Path, input_name: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"{input_name}: {path.name} is missing; retrain the model") from None
    body = [r for r in rows[1:] if r]
    try:
        ordered = sorted(body, key=lambda r: int(r[0]))
    except (ValueError, IndexError):
        raise UserError(f"{input_name}: {path.name} must have rows 'index,label'") from None
    if [int(r[0]) for r in ordered] != list(range(len(ordered))) or not ordered:
        raise UserError(f"{input_name}: {path.name} must number its labels 0..n-1")
    return [r[1] for r in ordered]
