"""A trained model as the starting point of more training (fine-tuning), with a head for the new class set.

The network of a trained ModelDirectory (ours or the built-in Train PyTorch
Model's) keeps every weight; only the classifier's rows change to match the
classes of the new training data, by name:

- a class the model knows keeps its row (weights and bias), so before any
  step the continued model scores the old classes exactly as the trained one;
- a class it does not know gets a fresh row, initialised as torch initialises
  a new `nn.Linear` (from the run's seeded generator);
- a class of the model absent from the new data is dropped.

The built-in's pre-trained models carry a second linear layer on the 1000-way
ImageNet logits (`StackedHead`); two linear layers with nothing between them
are one (W2·W1, W2·b1 + b2), folded into the network's own head, so every
continued model is the plain architecture our folders hold.

`lineage` says where the weights came from, newest first: each entry the
architecture, the class set and when and by what the model was written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .registry import StackedHead, build_model

# What a lineage entry records of the model a run started from.
LINEAGE_KEYS = ("model_name", "writer", "time_created", "categories", "weights_sha256")
OURS, BUILTIN = "designer-resnet", "azureml-designer"


def head_of(model: nn.Module) -> nn.Linear:
    """The network's classifier layer (`fc` for ResNets, `classifier` for DenseNets)."""
    for name in ("fc", "classifier"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise TypeError(f"{type(model).__name__} has no fc or classifier layer")


def folded(model: nn.Module) -> nn.Module:
    """The network with a built-in StackedHead folded into its own head (a plain network returned as it is)."""
    if not isinstance(model, StackedHead):
        return model
    net, outer = model.model, model.out_linear_model
    inner = head_of(net)
    with torch.no_grad():
        weight = outer.weight.double() @ inner.weight.double()
        bias = outer.weight.double() @ inner.bias.double() + outer.bias.double()
        head = nn.Linear(inner.in_features, outer.out_features)
        head.weight.copy_(weight.to(inner.weight.dtype))
        head.bias.copy_(bias.to(inner.bias.dtype))
    setattr(net, "fc" if head_of(net) is getattr(net, "fc", None) else "classifier", head)
    return net


def continued_network(model: nn.Module, old: list[str], new: list[str], model_name: str,
                      init_params: dict) -> nn.Module:
    """The trained network with a classifier for the classes `new`: rows of `old` classes kept, others fresh.

    Built as `build_model(model_name, len(new), init_params)` (the plain architecture), the trained
    weights loaded into it, then the head's rows placed by class name.
    """
    source = folded(model)
    target = build_model(model_name, len(new), init_params)  # its head: fresh rows from torch's generator
    head, trained_head = head_of(target), head_of(source)
    state = {k: v for k, v in source.state_dict().items()
             if not k.startswith(_prefix(source, trained_head))}
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(_prefix(target, head)) for k in missing):
        raise ValueError(f"the trained {model_name} does not fit its architecture: {(missing + unexpected)[:3]}")
    index = {name: i for i, name in enumerate(old)}
    with torch.no_grad():
        for row, name in enumerate(new):
            if name in index:
                head.weight[row].copy_(trained_head.weight[index[name]])
                head.bias[row].copy_(trained_head.bias[index[name]])
    return target


def _prefix(model: nn.Module, layer: nn.Module) -> str:
    """The state-dict key prefix of a direct child layer (`fc.` or `classifier.`)."""
    for name, child in model.named_children():
        if child is layer:
            return name + "."
    raise ValueError("the head is not a direct child of the network")


def lineage_entry(model_name: str, writer: str, time_created, categories: list[str], weights: Path) -> dict:
    """One step of a model's lineage: what a run started from (its weights file hashed in chunks, not held whole)."""
    with open(weights, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"model_name": model_name, "writer": writer, "time_created": str(time_created or ""),
            "categories": list(categories), "weights_sha256": digest}


def class_changes(old: list[str], new: list[str]) -> dict:
    """How the class set changed: kept, added and dropped class names (in the new and old orders)."""
    known, wanted = set(old), set(new)
    return {"kept": [c for c in new if c in known], "added": [c for c in new if c not in known],
            "dropped": [c for c in old if c not in wanted]}
