"""Architectures on torchvision, ImageNet weights, and classifier heads.

Networks are always built without weights; pretrained tensors are read
with `torch.load(weights_only=True)` from the torch hub cache (or a file the
user gives) and loaded into it, then the 1000-way head is replaced by a
fresh layer sized for the training data's classes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from ..errors import UserError

# The designer's ResNet module offers these but resnext101_64x4d, which is ours on top.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
DENSENETS = ("densenet121", "densenet161", "densenet169", "densenet201")
FAMILIES = {"ResNet": RESNETS, "DenseNet": DENSENETS}
# The boolean each family's constructor takes besides the name: torchvision's keyword, and the init
# param of the designer's module (and of its built-in class) of that family, all three spelt alike.
FAMILY_PARAMS = {"ResNet": ("zero_init_residual",), "DenseNet": ("memory_efficient",)}
WEIGHT_CHOICES = ("DEFAULT", "IMAGENET1K_V1")
# ImageNet normalisation every torchvision classification weight was trained with.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Old DenseNet checkpoints name layers `norm.1`; current modules say `norm1`.
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def family_of(model_name: str) -> str:
    for family, names in FAMILIES.items():
        if model_name in names:
            return family
    raise UserError(f"model_name: {model_name!r} is not one of {', '.join(RESNETS + DENSENETS)}")


def weights_enum(model_name: str, choice: str):
    """The torchvision weights entry for `choice` ('DEFAULT' = best available)."""
    if choice not in WEIGHT_CHOICES:
        raise UserError(f"weights: {choice!r} is not one of {', '.join(WEIGHT_CHOICES)}")
    return getattr(tvm.get_model_weights(model_name), choice)


def cache_path(model_name: str, choice: str) -> Path:
    """Where torch hub keeps this weights file (`$TORCH_HOME/hub/checkpoints/<file>`)."""
    url = weights_enum(model_name, choice).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def resolve_weights(model_name: str, choice: str = "DEFAULT", weights_file: str | Path | None = None) -> Path:
    """A local file holding the pretrained state dict: the given file, the cache, or a download.

    Offline with neither → UserError naming both ways out.
    """
    if weights_file is not None:
        path = Path(weights_file)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt") and p.is_file())
            if len(files) != 1:
                raise UserError(f"weights_file: {path} must hold exactly one .pth/.pt file, found {len(files)}")
            path = files[0]
        if not path.is_file():
            raise UserError(f"weights_file: {path} does not exist; give the .pth file of the ImageNet weights")
        return path
    cached = cache_path(model_name, choice)
    if cached.is_file():
        return cached
    url = weights_enum(model_name, choice).url
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        hash_prefix = re.search(r"-([a-f0-9]+)\.", os.path.basename(url))
        torch.hub.download_url_to_file(url, str(cached), hash_prefix.group(1) if hash_prefix else None, progress=True)
    except Exception as exc:  # no network, proxy, DNS, HTTP errors all look different
        cached.unlink(missing_ok=True)
        raise UserError(
            f"pretrained: cannot download {model_name} {choice} weights ({exc.__class__.__name__}); "
            f"put {os.path.basename(url)} in the torch hub cache ({cached.parent}, set TORCH_HOME to move it) "
            f"or connect the file to the weights_file input, or set pretrained to false"
        ) from None
    return cached


def load_weights(path: Path, *, what: str = "weights_file") -> dict:
    """A state dict from a file, with no code execution (`weights_only=True`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{what}: {path.name} is not a readable PyTorch weights file ({exc.__class__.__name__}); "
                        "give the .pth state dict from torchvision") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what}: {path.name} does not hold a state dict of tensors")
    return {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def build_backbone(model_name: str, init_params: dict | None = None, *,
                   pretrained_state: dict | None = None) -> nn.Module:
    """The torchvision network with its ImageNet 1000-way head, on `pretrained_state` when given.

    init_params: a model folder's init params; only the family's FAMILY_PARAMS are read from it (absent: False).
    """
    params = init_params or {}
    kwargs = {key: bool(params.get(key, False)) for key in FAMILY_PARAMS[family_of(model_name)]}
    model = tvm.get_model(model_name, weights=None, **kwargs)
    if pretrained_state is not None:
        try:
            model.load_state_dict(pretrained_state)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            first = lines[1].strip() if len(lines) > 1 else str(exc)  # line 0 only says loading failed
            raise UserError(f"weights_file: the weights do not fit {model_name} ({first}); "
                            f"give the ImageNet weights of {model_name}") from None
    return model


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final layer for a fresh `num_classes`-way linear layer."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif isinstance(getattr(model, "classifier", None), nn.Linear):
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    else:
        raise TypeError(f"{type(model).__name__} has no fc or classifier layer to replace")
    return model


def build_model(model_name: str, num_classes: int, init_params: dict | None = None, *,
                pretrained_state: dict | None = None) -> nn.Module:
    """The classifier: backbone (build_backbone), optional ImageNet tensors, then a `num_classes` head."""
    return replace_head(build_backbone(model_name, init_params, pretrained_state=pretrained_state), num_classes)


class StackedHead(nn.Module):
    """A 1000-way ImageNet network with a linear layer on its logits.

    How Microsoft's built-in Train PyTorch Model adapts a pre-trained network
    (its state dict keys: `model.*` and `out_linear_model.*`); we read such
    models, and replace the head instead when we train.
    """

    def __init__(self, model: nn.Module, num_classes: int):
        super().__init__()
        self.model = model
        last = model.fc if isinstance(getattr(model, "fc", None), nn.Linear) else model.classifier
        self.out_linear_model = nn.Linear(last.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_linear_model(self.model(x))
