"""Train PyTorch Model's recipe: optimizer, learning-rate schedule, loss, MixUp/CutMix, EMA, clipping, accumulation,
freezing.

Every option's default is the designer's recipe (SGD with Nesterov momentum 0.9, weight decay 1e-4 on every
parameter, linear warmup then polynomial decay, plain cross-entropy), built exactly as before, so a run that sets
none of them gives the same weights bit for bit (tests/test_fingerprint.py). Each piece is torch's or
torchvision's own: torch.optim's optimizers and lr_schedulers, CrossEntropyLoss (label_smoothing, weight),
torchvision.transforms.v2's MixUp and CutMix, torch.optim.swa_utils.AveragedModel, clip_grad_norm_.

`RecipeOptions` holds the component's parameters for all this (TrainConfig extends it); `check_options` refuses
bad values and bad combinations with one line; `freeze` acts on the network before DDP wraps it;
`build_optimizer` and `build_schedule` make the optimizer and its schedule; `Recipe` is what a training step does
besides forward and backward.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from dataclasses import dataclass, field, fields
from typing import Callable

import torch
import torchvision.models as tvm
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

from ..component_source import default, parameters, value_parser
from ..errors import UserError

log = logging.getLogger(__name__)

_SPEC = "train_pytorch_model"


@dataclass
class RecipeOptions:
    """Train PyTorch Model's recipe parameters, with the component's defaults (the designer's recipe)."""

    optimizer: str = default(_SPEC, "optimizer")
    momentum: float = default(_SPEC, "momentum")  # sgd only
    nesterov: bool = default(_SPEC, "nesterov")  # sgd only
    beta1: float = default(_SPEC, "beta1")  # adam, adamw only
    beta2: float = default(_SPEC, "beta2")  # adam, adamw only
    weight_decay: float = default(_SPEC, "weight_decay")
    weight_decay_on_norms_and_biases: bool = default(_SPEC, "weight_decay_on_norms_and_biases")
    lr_schedule: str = default(_SPEC, "lr_schedule")
    lr_step_epochs: int = default(_SPEC, "lr_step_epochs")  # step only
    lr_step_gamma: float = default(_SPEC, "lr_step_gamma")  # step only
    label_smoothing: float = default(_SPEC, "label_smoothing")
    mixup_alpha: float = default(_SPEC, "mixup_alpha")
    cutmix_alpha: float = default(_SPEC, "cutmix_alpha")
    mix_probability: float = default(_SPEC, "mix_probability")  # with MixUp or CutMix only
    ema_decay: float = default(_SPEC, "ema_decay")
    gradient_clip_norm: float = default(_SPEC, "gradient_clip_norm")
    gradient_accumulation_steps: int = default(_SPEC, "gradient_accumulation_steps")
    weighted_loss: str = default(_SPEC, "weighted_loss")
    freeze: str = default(_SPEC, "freeze")
    freeze_stages: int = default(_SPEC, "freeze_stages")  # first_stages only


OPTIONS = tuple(f.name for f in fields(RecipeOptions))

# A setting of one choice of another option: (that option, the choices it belongs to). Given (not at its default)
# with another choice it would do nothing, so it is refused rather than silently ignored.
_BELONGS_TO = {
    "momentum": ("optimizer", ("sgd",)),
    "nesterov": ("optimizer", ("sgd",)),
    "beta1": ("optimizer", ("adam", "adamw")),
    "beta2": ("optimizer", ("adam", "adamw")),
    "lr_step_epochs": ("lr_schedule", ("step",)),
    "lr_step_gamma": ("lr_schedule", ("step",)),
    "freeze_stages": ("freeze", ("first_stages",)),
}
# torchvision's reference recipe's norm layers (`--norm-weight-decay`): their weights and biases.
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
          nn.LocalResponseNorm)
_HEADS = ("fc", "classifier")  # the classifier layer registry.replace_head sizes for the classes


def check_options(opts: RecipeOptions) -> None:
    """Refuse, before anything runs, a value out of the spec's range and a setting its other options make moot."""
    spec = parameters(_SPEC)
    for name in OPTIONS:
        value = getattr(opts, name)
        try:
            value_parser(spec[name])(str(value))
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{name}: {exc}") from None
    for name, (owner, choices) in _BELONGS_TO.items():
        value, chosen = getattr(opts, name), getattr(opts, owner)
        if chosen not in choices and value != default(_SPEC, name):
            raise UserError(f"{name}: {value} applies only with {owner} {' or '.join(choices)}, not {chosen}; leave "
                            f"{name} at its default {default(_SPEC, name)} or set {owner} {choices[0]}")
    if opts.optimizer == "sgd" and opts.nesterov and opts.momentum == 0:
        raise UserError("nesterov: Nesterov momentum needs a momentum above 0; set momentum (the default is 0.9) or "
                        "nesterov False")
    if not _mixes(opts) and opts.mix_probability != default(_SPEC, "mix_probability"):
        raise UserError(f"mix_probability: {opts.mix_probability} applies only with MixUp or CutMix; set mixup_alpha "
                        "or cutmix_alpha above 0, or leave mix_probability at its default 1")


def describe(opts: RecipeOptions) -> str:
    """The options that differ from the designer's recipe, for the log ("" when none do)."""
    return ", ".join(f"{name} {getattr(opts, name)}" for name in OPTIONS if getattr(opts, name) != default(_SPEC, name))


# --- freezing ---------------------------------------------------------------------------------------------------------


def backbone_stages(model: nn.Module) -> list[list[str]] | None:
    """Module names of the stem and each stage, in forward order; None for an architecture we do not know.

    A stage ends where its features are complete, at the feature map a detector or a feature extractor taps
    (strides 4, 8, 16, 32): ResNet's layerN; DenseNet's denseblockN, led by the transition that halves the map
    for it, as the downsampling block leads ResNet's layerN. DenseNet's final norm5 closes stage 4, so that
    freezing 4 stages is freezing the backbone in both families.
    """
    if isinstance(model, tvm.ResNet):
        return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    if isinstance(model, tvm.DenseNet):
        blocks = sum(1 for name, _ in model.features.named_children() if name.startswith("denseblock"))
        stages = [["features.conv0", "features.norm0"]]
        stages += [([f"features.transition{i - 1}"] if i > 1 else []) + [f"features.denseblock{i}"]
                   for i in range(1, blocks + 1)]
        stages[-1].append("features.norm5")
        return stages
    return None


def freeze(model: nn.Module, opts: RecipeOptions) -> int:
    """Turn off the gradients of the parts `opts.freeze` keeps (call on the bare network, before DDP); the count."""
    if opts.freeze == "none":
        return 0
    if opts.freeze == "backbone":
        heads = [name for name in _HEADS if isinstance(getattr(model, name, None), nn.Module)]
        if not heads:
            raise UserError(f"freeze: backbone needs a classifier head (fc or classifier); {type(model).__name__} "
                            "has none")
        frozen = [p for name, p in model.named_parameters() if name.split(".")[0] != heads[0]]
    else:
        stages = backbone_stages(model)
        if stages is None:
            raise UserError(f"freeze: first_stages knows the stages of ResNet and DenseNet, not of "
                            f"{type(model).__name__}; use freeze backbone")
        if opts.freeze_stages > len(stages) - 1:
            raise UserError(f"freeze_stages: {opts.freeze_stages} is more than the {len(stages) - 1} stages of "
                            f"{type(model).__name__}")
        prefixes = tuple(f"{name}." for stage in stages[:opts.freeze_stages + 1] for name in stage)
        frozen = [p for name, p in model.named_parameters() if name.startswith(prefixes)]
    for p in frozen:
        p.requires_grad_(False)
    return len(frozen)


def _frozen_norms(model: nn.Module) -> list[nn.Module]:
    """Norm layers whose parameters are all frozen: they stay in eval mode, so their running statistics stay too."""
    return [m for m in model.modules() if isinstance(m, _NORMS) and any(True for _ in m.parameters(recurse=False))
            and not any(p.requires_grad for p in m.parameters(recurse=False))]


# --- optimizer and schedule -------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, opts: RecipeOptions) -> list[dict]:
    """The trainable parameters as optimizer groups: one group (the designer's), or norms and biases kept undecayed."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if opts.weight_decay_on_norms_and_biases:
        return [{"params": [p for _, p in trainable]}]
    undecayed = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    undecayed |= {id(p) for name, p in trainable if name.endswith("bias")}
    groups = [{"params": [p for _, p in trainable if id(p) not in undecayed]},
              {"params": [p for _, p in trainable if id(p) in undecayed], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, opts: RecipeOptions, lr: float) -> torch.optim.Optimizer:
    """torch's SGD, Adam or AdamW over the model's trainable parameters (frozen ones get no state)."""
    groups = parameter_groups(model, opts)
    if opts.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opts.momentum, nesterov=opts.nesterov,
                               weight_decay=opts.weight_decay)
    kind = torch.optim.AdamW if opts.optimizer == "adamw" else torch.optim.Adam
    return kind(groups, lr=lr, betas=(opts.beta1, opts.beta2), weight_decay=opts.weight_decay)


def lr_lambda(warmup: int, total: int, power: float = 0.9):
    """Linear warmup over `warmup` steps, then polynomial decay to 0 at `total`."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - progress) ** power

    return factor


def optimizer_steps(batches: int, opts: RecipeOptions) -> int:
    """Optimizer steps in an epoch of `batches` batches: one per gradient_accumulation_steps (and a last short one)."""
    return math.ceil(batches / opts.gradient_accumulation_steps)


def build_schedule(optimizer, opts: RecipeOptions, warmup: int, steps_per_epoch: int, epochs: int):
    """The schedule, stepped after every optimizer step: warmup (step+1)/warmup, then the chosen decay.

    The designer's polynomial is today's LambdaLR, unchanged. Cosine and step are torch's CosineAnnealingLR and
    StepLR after LinearLR's same warmup, joined by SequentialLR (as torchvision's reference recipe does).
    """
    total = epochs * steps_per_epoch
    if opts.lr_schedule == "polynomial":
        return lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total))
    if warmup > 1:
        # Constructed before the decay, so that its `initial_lr` is the peak rate the decay starts from.
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
    if opts.lr_schedule == "cosine":
        decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=_cosine_steps(warmup, total))
    else:
        decay = lr_scheduler.StepLR(optimizer, step_size=opts.lr_step_epochs * steps_per_epoch,
                                    gamma=opts.lr_step_gamma)
    if warmup <= 1:  # a warmup of one step is the peak rate from the start
        return decay
    return lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


def _cosine_steps(warmup: int, total: int) -> int:
    """The cosine's length: the steps after the warmup (all of them when there is none)."""
    return max(1, total - warmup if warmup > 1 else total)


def stretch_schedule(scheduler, warmup: int, steps_per_epoch: int, epochs: int) -> None:
    """After resuming with more epochs: the cosine, whose length came from the checkpoint, ends at this run's end.

    CosineAnnealingLR steps by the ratio of its curve, so from where it is the rate follows the new curve's shape
    down to 0 at the new last step (polynomial's LambdaLR is stretched by its lambda; step keeps its steps).
    """
    for part in getattr(scheduler, "_schedulers", [scheduler]):
        if isinstance(part, lr_scheduler.CosineAnnealingLR):
            part.T_max = _cosine_steps(warmup, epochs * steps_per_epoch)


# --- loss, mixing and EMA ---------------------------------------------------------------------------------------------


def class_weights(targets, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights from the training targets, scaled to average 1 over the classes present.

    A class the schema lists but no training image has is never a target; it gets the neutral weight 1.
    """
    counts = torch.bincount(torch.as_tensor(list(targets), dtype=torch.int64), minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = 1.0 / counts[present]
    weights[present] *= present.sum() / weights[present].sum()
    return weights.float()


def _mixes(opts: RecipeOptions) -> bool:
    return opts.mixup_alpha > 0 or opts.cutmix_alpha > 0


def _mixing(opts: RecipeOptions, num_classes: int):
    """torchvision's MixUp and/or CutMix (one of them at random per batch when both), applied with mix_probability."""
    mixes = []
    if opts.mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=opts.mixup_alpha, num_classes=num_classes))
    if opts.cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=opts.cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return None
    mix = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
    return mix if opts.mix_probability >= 1 else v2.RandomApply([mix], p=opts.mix_probability)


class _EpochMixer:
    """Mixes batches with draws from its own random stream, seeded per (run seed, epoch, rank).

    torchvision's MixUp and CutMix draw from torch's global CPU generator; they run here on a forked copy of it
    holding this stream's state, so the draws depend on the seed alone (resumed or not, whatever else draws).
    """

    def __init__(self, transform, num_classes: int, seed: int):
        self._transform, self._num_classes = transform, num_classes
        self._state = torch.Generator().manual_seed(seed).get_state()

    def __call__(self, images: torch.Tensor, targets: torch.Tensor):
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._state)
            images, targets = self._transform(images, targets)
            self._state = torch.get_rng_state()
        if targets.ndim == 1:  # a batch mix_probability left unmixed: the same loss, on one-hot targets
            targets = F.one_hot(targets, self._num_classes).float()
        return images, targets


@dataclass
class Recipe:
    """What a training step does besides forward and backward. The default is the designer's plain step."""

    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    accumulation: int = 1  # batches per optimizer step
    clip_norm: float = 0.0  # 0: off
    mixing: Callable | None = None  # MixUp/CutMix on (images, class indices) -> (images, soft targets)
    num_classes: int = 0
    ema: AveragedModel | None = None  # the weights' moving average, when on
    model: nn.Module | None = None  # the bare network the EMA follows
    frozen_norms: list[nn.Module] = field(default_factory=list)

    @classmethod
    def build(cls, opts: RecipeOptions, model: nn.Module, targets, num_classes: int, device: torch.device,
              total_steps: int) -> "Recipe":
        """The run's recipe. `model`: the bare network (not DDP's or compile's wrapper), frozen and placed;
        `targets`: the training set's class indices; `total_steps`: the run's optimizer steps."""
        weight = class_weights(targets, num_classes).to(device) if opts.weighted_loss == "inverse_frequency" else None
        ema = None
        if opts.ema_decay > 0:
            # use_buffers: BatchNorm's running statistics are averaged too (torchvision's reference recipe), so the
            # averaged weights are scored with statistics that match them.
            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(opts.ema_decay), use_buffers=True)
            kept = opts.ema_decay ** total_steps
            if kept > 0.05:
                log.warning("ema_decay %g averages over about %d optimizer steps, but the run has %d: the initial "
                            "weights still make up %.0f%% of the average at the end; lower ema_decay",
                            opts.ema_decay, round(1 / (1 - opts.ema_decay)), total_steps, 100 * kept)
        return cls(criterion=nn.CrossEntropyLoss(weight=weight, label_smoothing=opts.label_smoothing),
                   accumulation=opts.gradient_accumulation_steps, clip_norm=opts.gradient_clip_norm,
                   mixing=_mixing(opts, num_classes), num_classes=num_classes, ema=ema, model=model,
                   frozen_norms=_frozen_norms(model))

    def train_mode(self, model: nn.Module) -> None:
        """Training mode, but for frozen norm layers: they normalise with, and keep, their running statistics."""
        model.train()
        for module in self.frozen_norms:
            module.eval()

    def mixer(self, seed: int) -> Callable | None:
        """This epoch's MixUp/CutMix, drawing from `seed`; None when mixing is off."""
        return None if self.mixing is None else _EpochMixer(self.mixing, self.num_classes, seed)

    def group(self, step: int, steps: int) -> tuple[bool, bool, int]:
        """For batch `step` (from 1) of `steps`: (first of its optimizer step, last of it, batches in it)."""
        start = (step - 1) // self.accumulation * self.accumulation + 1
        end = min(start + self.accumulation - 1, steps)
        return step == start, step == end, end - start + 1

    @staticmethod
    def syncing(model: nn.Module, sync: bool):
        """DDP's gradient all-reduce only on a group's last batch (no_sync on the others); nothing without DDP."""
        ddp = getattr(model, "_orig_mod", model)
        if sync or not isinstance(ddp, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return ddp.no_sync()

    def step(self, optimizer, scheduler) -> None:
        """The optimizer step after a group's gradients: clipped first when asked, then the schedule and the EMA."""
        if self.clip_norm > 0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)  # no GradScaler: bf16 autocast needs none
        optimizer.step()
        scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def evaluated(self, model: nn.Module) -> nn.Module:
        """What validation scores and the trained model holds: the EMA's network when on, else `model`."""
        return self.ema.module if self.ema is not None else model
