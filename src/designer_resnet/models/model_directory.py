"""UntrainedModelDirectory and ModelDirectory: ours and Microsoft's built-in modules', read and written alike.

Layout (docs/formats.md): `_meta.yaml` (type ModelDirectory, model: model_spec.yaml),
`model_spec.yaml`, `model` (a state dict whose keys all start with `model.`) and,
when trained, `index_to_label.csv`. Our folders carry what the built-in modules
need where they look for it (`flavor_extras` naming their ResNet/DenseNet
class, `time_created` in their format, their ImageNormalizer pre-processor),
and what is ours under `designer_resnet:`, which they ignore.

Nothing a folder says is imported or executed: `flavor_extras.module/class` is
only a key into BUILTIN_CLASSES, a pre-processor must be the built-in
ImageNormalizer, op lists pass the op allowlist, and tensors are read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from ..directories.files import read_port_file, write_port_yaml
from ..directories.meta import EXTENSION_KEY, inside_path, meta_file, read_meta, write_meta
from ..errors import UserError
from ..transforms.ops import validate_ops
from .continued import BUILTIN, LINEAGE_KEYS, OURS, continued_network, lineage_entry
from .registry import FAMILY_PARAMS, StackedHead, build_backbone, build_model, family_of, load_weights

MODEL_SPEC = "model_spec.yaml"
MODEL_FILE = "model"
LABEL_MAP = "index_to_label.csv"
STATE_PREFIX = "model."
FORMAT_VERSION = 2
# time_created as the built-in loader parses it; any other form makes it refuse the folder.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"
TASK_TYPE = "MultiClassification"
_BUILTIN_PACKAGE = "azureml.designer.modules.dl.pytorch.initialize_models.vision.classification"
# The built-in modules' classes, by (module, class) as a folder names them -> our family.
BUILTIN_CLASSES = {(f"{_BUILTIN_PACKAGE}.resnet", "ResNet"): "ResNet",
                   (f"{_BUILTIN_PACKAGE}.densenet", "DenseNet"): "DenseNet"}
_BUILTIN_OF_FAMILY = {family: key for key, family in BUILTIN_CLASSES.items()}
# Each family's classifier weight (out_features x in_features), unprefixed; the built-in's pre-trained stack's own.
_HEAD_WEIGHT = {"ResNet": "fc.weight", "DenseNet": "classifier.weight"}
_STACKED_HEAD_WEIGHT = "out_linear_model.weight"
# The one pre-processor the built-in Score constructs: ToTensor, then Normalize(mean, std).
NORMALIZER = ("azureml.designer.core.model.model_spec.builtin_model_meta.pre_processor", "ImageNormalizer")
BUILTIN_MEAN_STD = [0.5, 0.5, 0.5]


@dataclass
class UntrainedModel:
    """What Train starts from: an architecture (and ImageNet tensors), or a trained model to train further."""

    family: str
    init_params: dict
    weights_path: Path | None  # ImageNet tensors (keys `model.*`) when pretrained
    initial: TrainedModel | None = None  # a trained model continued (fine-tuning); its weights, not ImageNet's
    lineage: list = field(default_factory=list)  # where the starting weights came from, newest first

    @property
    def model_name(self) -> str:
        return self.init_params["model_name"]

    def build(self, num_classes: int) -> nn.Module:
        """The network with a fresh `num_classes` head, on the folder's ImageNet tensors when pretrained."""
        state = None
        if self.weights_path is not None:
            state = _unprefixed(load_weights(self.weights_path, what="untrained_model"), "untrained_model")
        return build_model(self.model_name, num_classes, self.init_params, pretrained_state=state)

    def build_for(self, categories: list[str]) -> nn.Module:
        """The network to train on `categories`: `build`, or the trained model with its head set to them by name."""
        if self.initial is None:
            return self.build(len(categories))
        return continued_network(self.initial.model, self.initial.categories, categories, self.model_name,
                                 self.init_params)


@dataclass
class TrainedModel:
    model: nn.Module
    categories: list[str]
    preprocess: dict  # transforms (from a raw image), from_training_data, mean, std
    spec: dict

    @property
    def builtin(self) -> bool:
        """Written by Microsoft's built-in Train PyTorch Model rather than by us."""
        return EXTENSION_KEY not in self.spec


def _now() -> str:
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)


def _prefixed(state: dict) -> dict:
    return {STATE_PREFIX + k: v for k, v in state.items()}


def _unprefixed(state: dict, input_name: str) -> dict:
    if not all(k.startswith(STATE_PREFIX) for k in state):
        raise UserError(f"{input_name}: the weights file's keys do not start with {STATE_PREFIX!r}; "
                        "recreate the model folder with the ResNet, DenseNet or Train PyTorch Model module")
    return {k[len(STATE_PREFIX):]: v for k, v in state.items()}


def _builtin_init_params(family: str, params: dict, **overrides) -> dict:
    keep = ("model_name", "pretrained") + FAMILY_PARAMS[family]
    return {**{k: params[k] for k in keep if k in params}, **overrides}


def _spec(family: str, builtin_params: dict, ours: dict) -> dict:
    """The model_spec.yaml fields both kinds of folder share."""
    module, cls = _BUILTIN_OF_FAMILY[family]
    return {
        "flavor": {"name": "pytorch", "serialization_method": "state_dict"},
        "model_file": MODEL_FILE,
        "time_created": _now(),
        "flavor_extras": {"module": module, "class": cls, "is_cuda": False, "init_params": builtin_params},
        "task_type": TASK_TYPE,
        EXTENSION_KEY: {"format_version": FORMAT_VERSION, "family": family, **ours},
    }


def _write(path: Path, spec: dict, state: dict) -> None:
    torch.save(_prefixed(state), path / MODEL_FILE)
    with open(path / MODEL_SPEC, "w", encoding="utf-8") as f:
        write_port_yaml(spec, f)
    write_meta(path, {"type": "ModelDirectory", "extension": {}, "model": MODEL_SPEC})


def write_untrained(path: Path, init_params: dict, weights_file: Path | None) -> None:
    """An UntrainedModelDirectory the built-in Train PyTorch Model also loads.

    `model` holds the 1000-way network: the ImageNet tensors when pretrained
    (checked against the architecture here), else a fresh initialisation, which
    the built-in loads to check the folder and our training does not use.
    """
    family = family_of(init_params["model_name"])
    state = load_weights(weights_file) if weights_file is not None else None
    net = build_backbone(init_params["model_name"], init_params, pretrained_state=state)
    spec = _spec(family, _builtin_init_params(family, init_params), {"init_params": dict(init_params)})
    _write(path, spec, net.state_dict())


def write_trained(path: Path, model: nn.Module, untrained: UntrainedModel, categories: list[str],
                  preprocess: dict, extra: dict | None = None) -> None:
    """A trained ModelDirectory that the built-in Score Image Model also loads.

    The built-in rebuilds `class(**init_params)`: with `pretrained: false` and
    `num_classes` that is the network with an N-way head, which our weights fit.
    It normalises with the ImageNormalizer's mean and std and resizes nothing, as
    when it scores its own models; our whole pre-processing chain is under
    `designer_resnet:` (what Score Image Model and the served model use).
    """
    family = untrained.family
    builtin = _builtin_init_params(family, untrained.init_params, pretrained=False, num_classes=len(categories))
    ours = {"init_params": dict(untrained.init_params),
            "preprocess": {"transforms": [list(op) for op in preprocess.get("transforms") or []],
                           "from_training_data": int(preprocess.get("from_training_data", 0)),
                           "mean": list(preprocess["mean"]), "std": list(preprocess["std"])}}
    if extra:
        ours["training"] = extra
    if untrained.lineage:
        ours["lineage"] = [dict(entry) for entry in untrained.lineage]
    spec = _spec(family, builtin, ours)
    spec["label_map_file"] = LABEL_MAP
    spec["inputs"] = [{"name": "image", "pre_processor": {
        "module": NORMALIZER[0], "class": NORMALIZER[1],
        "init_params": {"mean": list(preprocess["mean"]), "std": list(preprocess["std"])}}}]
    with open(path / LABEL_MAP, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", "label"])
        for i, name in enumerate(categories):
            writer.writerow([i, name])
    _write(path, spec, model.to("cpu").state_dict())


def _read_spec(path: Path, port: str, input_name: str) -> dict:
    meta = read_meta(path, port, input_name=input_name)
    spec_path = meta_file(path, meta, "model", MODEL_SPEC, input_name=input_name)
    return read_port_file(spec_path, "YAML", input_name=input_name,
                          fix="connect the output of a ResNet, DenseNet or Train PyTorch Model module")


def _identify(spec: dict, input_name: str) -> tuple[str, dict]:
    """(family, init_params) of a folder of ours or of a built-in module; anything else is refused."""
    ours = spec.get(EXTENSION_KEY)
    extras = spec.get("flavor_extras") if isinstance(spec.get("flavor_extras"), dict) else {}
    if isinstance(ours, dict):
        family, params = ours.get("family"), ours.get("init_params")
    else:
        named = (extras.get("module"), extras.get("class"))
        family = BUILTIN_CLASSES.get(named) if all(isinstance(n, str) for n in named) else None
        params = extras.get("init_params")
    if family is None or not isinstance(params, dict):
        found = f"{extras.get('module')}.{extras.get('class')}"
        raise UserError(f"{input_name}: the model class {found} is neither ours nor a built-in ResNet or DenseNet; "
                        "connect the output of a ResNet, DenseNet or Train PyTorch Model module")
    model_name = str(params.get("model_name"))
    if family_of(model_name) != family:
        raise UserError(f"{input_name}: model_name {model_name!r} is not a {family}")
    return family, dict(params)


def _inside(path: Path, name, input_name: str) -> Path:
    """A file the model spec names: inside the folder, links included (directories.meta.inside_path)."""
    return inside_path(path, str(name), what=input_name)


def read_untrained(path: str | Path, *, input_name: str = "untrained_model") -> UntrainedModel:
    """An UntrainedModelDirectory of ours or of a built-in ResNet/DenseNet module; a trained model is refused."""
    path = Path(path)
    spec = _read_spec(path, "UntrainedModelDirectory", input_name)
    if spec.get("label_map_file"):
        raise UserError(f"{input_name}: {path} is a trained model; connect the output of the ResNet or DenseNet module")
    family, params = _identify(spec, input_name)
    weights = None
    if params.get("pretrained"):
        weights = _inside(path, spec.get("model_file") or MODEL_FILE, input_name)
        if not weights.is_file():
            raise UserError(f"{input_name}: {weights.name} (the ImageNet weights) is missing from {path}; "
                            "rerun the ResNet or DenseNet module")
    return UntrainedModel(family, params, weights)


# What Train's untrained_model input takes: an untrained model, or a trained one to train further.
STARTING_TYPES = ("UntrainedModelDirectory", "ModelDirectory")
# The most lineage entries a model folder keeps (its oldest beyond are dropped).
MAX_LINEAGE = 100


def read_start(path: str | Path, *, input_name: str = "untrained_model") -> UntrainedModel:
    """What Train starts from: an UntrainedModelDirectory (read_untrained), or a trained ModelDirectory of ours or
    the built-in's to train further, its lineage extended by the model it is."""
    path = Path(path)
    spec = _read_spec(path, STARTING_TYPES, input_name)
    if not spec.get("label_map_file"):
        return read_untrained(path, input_name=input_name)
    trained = read_trained(path, input_name=input_name)
    family, params = _identify(trained.spec, input_name)
    ours = trained.spec.get(EXTENSION_KEY)
    init_params = {k: params[k] for k in ("model_name", "pretrained", *FAMILY_PARAMS[family]) if k in params}
    weights = _inside(path, trained.spec.get("model_file") or MODEL_FILE, input_name)
    entry = lineage_entry(init_params["model_name"], OURS if isinstance(ours, dict) else BUILTIN,
                          trained.spec.get("time_created"), trained.categories, weights)
    earlier = _lineage(ours.get("lineage") if isinstance(ours, dict) else None, input_name)
    return UntrainedModel(family, init_params, None, trained, [entry, *earlier][:MAX_LINEAGE])


def _lineage(entries, input_name: str) -> list[dict]:
    """A folder's recorded lineage, checked: a list of entries with the known keys and plain values."""
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and set(e) <= set(LINEAGE_KEYS) for e in entries):
        raise UserError(f"{input_name}: {MODEL_SPEC} lineage must be a list of entries with {', '.join(LINEAGE_KEYS)}; "
                        "retrain the model")
    for entry in entries:
        for key, value in entry.items():
            plain = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            if not plain:
                raise UserError(f"{input_name}: {MODEL_SPEC} lineage {key} must be text; retrain the model")
    return entries


def _builtin_preprocess(spec: dict, input_name: str) -> dict:
    """The built-in's pre-processing: its ImageNormalizer (mean and std 0.5 unless it says otherwise), no resizing."""
    inputs = spec.get("inputs") or [{}]
    first = inputs[0] if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else {}
    pre = first.get("pre_processor") or {}
    if pre and (pre.get("module"), pre.get("class")) != NORMALIZER:
        raise UserError(f"{input_name}: pre-processor {pre.get('module')}.{pre.get('class')} is not one we can apply "
                        f"(only {NORMALIZER[1]}); retrain the model with Train PyTorch Model")
    params = pre.get("init_params") or {}
    return {"transforms": [], "from_training_data": 0,
            "mean": _triple(params.get("mean") or BUILTIN_MEAN_STD, "mean", input_name),
            "std": _triple(params.get("std") or BUILTIN_MEAN_STD, "std", input_name)}


def _triple(value, what: str, input_name: str) -> list[float]:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        out = []
    if len(out) != 3 or (what == "std" and min(out) <= 0):
        raise UserError(f"{input_name}: the pre-processor's {what} must be three numbers{' above 0' if what == 'std' else ''}")
    return out


def _our_preprocess(ours: dict, input_name: str) -> dict:
    pre = ours.get("preprocess") if isinstance(ours.get("preprocess"), dict) else {}
    transforms = validate_ops(pre.get("transforms") or [], input_name=f"{input_name} pre-processing")
    baked = pre.get("from_training_data") or 0
    if isinstance(baked, bool) or not isinstance(baked, int) or not 0 <= baked <= len(transforms):
        raise UserError(f"{input_name}: {MODEL_SPEC} preprocess.from_training_data {str(baked)[:40]!r} is not a whole "
                        f"number from 0 to {len(transforms)} (its transforms); retrain the model")
    return {"transforms": transforms, "from_training_data": baked,
            "mean": _triple(pre.get("mean"), "mean", input_name), "std": _triple(pre.get("std"), "std", input_name)}


def read_trained(path: str | Path, *, input_name: str = "trained_model") -> TrainedModel:
    """A trained ModelDirectory of ours or of the built-in Train PyTorch Model, with no code execution."""
    path = Path(path)
    spec = _read_spec(path, "ModelDirectory", input_name)
    if not spec.get("label_map_file"):
        raise UserError(f"{input_name}: {path} is an untrained model; train it with Train PyTorch Model first")
    family, params = _identify(spec, input_name)
    model_file = spec.get("model_file") or MODEL_FILE
    state = load_weights(_inside(path, model_file, input_name), what=input_name)
    ours = spec.get(EXTENSION_KEY)
    # The built-in Train's pre-trained model: the ImageNet network, then a 1000 -> N layer.
    stacked = not isinstance(ours, dict) and bool(params.get("pretrained"))
    if not stacked:
        state = _unprefixed(state, input_name)
    head = state.get(_STACKED_HEAD_WEIGHT if stacked else _HEAD_WEIGHT[family])
    if head is None or head.dim() != 2:
        raise UserError(f"{input_name}: {model_file} has no {params['model_name']} classifier layer; retrain the model")
    # The label map is read against the weights' head, so a crafted one is refused before any layer is built for it.
    categories = _read_label_map(_inside(path, spec["label_map_file"], input_name), input_name, classes=head.shape[0])
    if stacked:
        model: nn.Module = StackedHead(build_backbone(params["model_name"], params), len(categories))
    else:
        model = build_model(params["model_name"], len(categories), params)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"{input_name}: {model_file} does not match {params['model_name']} "
                        f"with {len(categories)} classes; retrain the model") from None
    preprocess = _our_preprocess(ours, input_name) if isinstance(ours, dict) else _builtin_preprocess(spec, input_name)
    return TrainedModel(model.eval(), categories, preprocess, spec)


def _read_label_map(path: Path, input_name: str, *, classes: int) -> list[str]:
    """The class names by index; `classes`, the model's outputs, is how many there must be (read no further)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            body = _label_rows(csv.reader(f), path, input_name, classes)
    except FileNotFoundError:
        raise UserError(f"{input_name}: {path.name} is missing; retrain the model") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{input_name}: {path.name} cannot be read as CSV ({str(exc) or exc.__class__.__name__}); "
                        "retrain the model") from None
    if [r[0] for r in body] != list(range(len(body))) or not body:
        raise UserError(f"{input_name}: {path.name} must number its labels 0..n-1")
    if len(body) != classes:
        raise UserError(f"{input_name}: {path.name} has {len(body)} labels but the model has {classes} outputs; "
                        "retrain the model")
    labels = [r[1] for r in body]
    first_at: dict[str, int] = {}
    for index, label in enumerate(labels):
        if label in first_at:
            raise UserError(f"{input_name}: {path.name} names the class {label[:60]!r} twice (indexes "
                            f"{first_at[label]} and {index}), so one output would have no column; retrain the model")
        first_at[label] = index
    return labels


def _label_rows(reader, path: Path, input_name: str, classes: int) -> list[tuple[int, str]]:
    """(index, label) of each non-empty row after the header, sorted by index; at most `classes` rows are read."""
    next(reader, None)
    body = []
    for row in reader:
        if not row:
            continue
        if len(body) == classes:
            raise UserError(f"{input_name}: {path.name} has more labels than the model's {classes} outputs; "
                            "retrain the model")
        try:
            body.append((int(row[0]), row[1]))
        except (ValueError, IndexError):
            raise UserError(f"{input_name}: {path.name} must have rows 'index,label'") from None
    return sorted(body)
