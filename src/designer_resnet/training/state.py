"""A training run's state besides its current weights, and the checkpoint schema that keeps it.

TrainingState owns the rules the loop asks about (the best epoch, early
stopping, the epochs left) and the checkpoint's keys: `to_checkpoint` writes
them all, `schema_problem` checks a loaded one holds them, and `restore` reads
them all back. A checkpoint holds only dicts, lists, tensors, numbers and
strings, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from ..errors import UserError


@dataclass
class EpochResult:
    epoch: int
    lr: float
    train_loss: float
    train_error: float
    images_per_second: float
    valid_loss: float
    top1: float
    top5: float


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_tensors(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _is_history(value) -> bool:
    names = {f.name for f in fields(EpochResult)}
    return isinstance(value, list) and bool(value) and all(
        isinstance(h, dict) and set(h) == names and all(_is_number(v) for v in h.values()) for h in value) and [
        h["epoch"] for h in value] == list(range(1, len(value) + 1))


def _is_rng(value) -> bool:
    mine = torch.get_rng_state()
    return isinstance(value, torch.Tensor) and value.dtype == mine.dtype and value.shape == mine.shape


def _is_optimizer(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("state"), dict) and isinstance(
        value.get("param_groups"), list) and all(isinstance(g, dict) for g in value["param_groups"])


# What each checkpoint key must hold, in words and as a check; to_checkpoint writes them all, restore reads them.
_SCHEMA = {
    "model": ("a state dict of tensors", _is_tensors),
    "optimizer": ("an optimizer state", _is_optimizer),
    "lr_scheduler": ("a schedule's state", lambda v: isinstance(v, dict)),
    "epoch": ("an epoch number", _is_count),
    "config": ("the training parameters", lambda v: isinstance(v, dict)),
    "model_name": ("a model name", lambda v: isinstance(v, str)),
    "categories": ("a list of class names", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)),
    "history": ("one result per epoch from epoch 1 on", _is_history),
    "best_top1": ("a number", _is_number),
    "best_epoch": ("an epoch number", _is_count),
    "best_loss": ("a number", _is_number),
    "stale": ("a count of epochs", _is_count),
    "best_model": ("a state dict of tensors", _is_tensors),
    "rng_cpu": ("this PyTorch's CPU random state", _is_rng),
    "stopped": ("true or false", lambda v: isinstance(v, bool)),
    "identity": ("a run identity", lambda v: isinstance(v, dict)),
    "ema": ("the EMA's state dict of tensors", _is_tensors),
}
# Written by every version that records its run identity, but `stopped`, which came later (absent: not stopped),
# and `ema`, written only by runs with ema_decay on (the run identity says whether a run needs it).
_OPTIONAL = ("stopped", "ema")


@dataclass
class TrainingState:
    """History, best epoch and early stopping of one run.

    `epochs` and `patience` are this run's settings, never read from a checkpoint:
    a resumed run may train to more epochs than the run that made it.
    """

    epochs: int
    patience: int
    history: list[EpochResult] = field(default_factory=list)
    best_top1: float = -1.0
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = field(default=None, compare=False)  # on the CPU
    best_loss: float = math.inf
    stale: int = 0  # epochs since the validation loss last went down
    stopped_early: bool = False

    @property
    def epoch(self) -> int:
        """The last epoch recorded; 0 before the first."""
        return self.history[-1].epoch if self.history else 0

    def epochs_left(self) -> range:
        """The epochs still to train: none after an early stop, else up to `epochs`."""
        return range(self.epoch + 1, (self.epoch if self.stopped_early else self.epochs) + 1)

    def record(self, result: EpochResult, weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Add an epoch's result; `weights` is called, and copied to the CPU, only when the epoch is the new best."""
        self.history.append(result)
        if result.top1 > self.best_top1:  # a tie keeps the earlier epoch
            self.best_top1, self.best_epoch = result.top1, result.epoch
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights().items()}
        if result.valid_loss < self.best_loss:
            self.best_loss, self.stale = result.valid_loss, 0
        else:
            self.stale += 1
        # Decided once, when the epoch ends: a run resumed with more epochs continues unless this one stopped.
        self.stopped_early = self.stale >= self.patience and result.epoch < self.epochs

    def to_checkpoint(self, model: nn.Module, optimizer, scheduler, *, identity: dict, config: dict, model_name: str,
                      categories: list[str], ema: nn.Module | None = None) -> dict:
        """Everything a resumed run needs, as a plain dict; `model` is the bare module, not its DDP wrapper;
        `ema` the weights' moving average (an AveragedModel), when the run keeps one."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(), "epoch": self.epoch, "config": config,
                "model_name": model_name, "categories": categories,
                "history": [asdict(h) for h in self.history], "best_top1": self.best_top1,
                "best_epoch": self.best_epoch, "best_loss": self.best_loss, "stale": self.stale,
                "best_model": self.best_weights, "rng_cpu": torch.get_rng_state(), "stopped": self.stopped_early,
                "identity": identity, **({"ema": ema.state_dict()} if ema is not None else {})}

    @staticmethod
    def schema_problem(checkpoint) -> str | None:
        """What is wrong with a loaded checkpoint's keys, in words ("has no rng_cpu"); None when restore can read it."""
        if not isinstance(checkpoint, dict):
            return f"holds a {type(checkpoint).__name__}, not a checkpoint"
        for key, (what, check) in _SCHEMA.items():
            if key not in checkpoint:
                if key in _OPTIONAL:
                    continue
                return f"has no {key}"
            if not check(checkpoint[key]):
                value = checkpoint[key]
                return f"has its {key} as {'None' if value is None else 'a ' + type(value).__name__}, not {what}"
        epochs = len(checkpoint["history"])
        if checkpoint["best_epoch"] > epochs or checkpoint["stale"] > epochs:
            return "has a best_epoch or stale count beyond its history"
        return None

    def restore(self, checkpoint: dict, model: nn.Module, optimizer, scheduler, *,
                ema: nn.Module | None = None) -> None:
        """Continue from `checkpoint` (one whose identity and schema_problem were checked): this state, the weights,
        the optimizer, the schedule, the EMA when `ema` is given, and the CPU random state. `model` is the bare
        module, not its DDP wrapper.

        A checkpoint that does not fit these (crafted, or its identity forged) is one UserError line.
        """
        _load_into(model, checkpoint["model"], "model weights")
        if ema is not None:
            if "ema" not in checkpoint:
                raise _misfit("EMA", "it keeps none")
            _load_into(ema, checkpoint["ema"], "EMA")
        numbers = [{k for k, v in group.items() if _is_number(v)} for group in optimizer.param_groups]
        _load_into(optimizer, checkpoint["optimizer"], "optimizer state")
        _check_optimizer(optimizer, numbers)
        _check_schedule(scheduler, checkpoint["lr_scheduler"])
        scheduler.load_state_dict(checkpoint["lr_scheduler"])
        self.history = [EpochResult(**h) for h in checkpoint["history"]]
        self.best_top1, self.best_epoch = checkpoint["best_top1"], checkpoint["best_epoch"]
        self.best_weights = checkpoint["best_model"]
        self.best_loss, self.stale = checkpoint["best_loss"], checkpoint["stale"]
        self.stopped_early = bool(checkpoint.get("stopped"))
        torch.set_rng_state(checkpoint["rng_cpu"])

    @staticmethod
    def identity_in(checkpoint) -> dict | None:
        """The run identity a loaded checkpoint records; None when it records none (an older version's)."""
        made = checkpoint.get("identity") if isinstance(checkpoint, dict) else None
        return made if isinstance(made, dict) else None


def _misfit(what: str, detail: str) -> UserError:
    return UserError(f"checkpoint_path: the checkpoint's {what} does not fit this run ({detail}); "
                     "give an empty checkpoint folder to start over")


def _load_into(target, state: dict, what: str) -> None:
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]  # line 0 only says loading failed
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else exc.__class__.__name__
        raise _misfit(what, detail[:200]) from None


def _check_optimizer(optimizer, numbers: list[set[str]]) -> None:
    """After load_state_dict, which checks only the groups' sizes: the settings that were numbers still are, and
    each parameter's buffers have its shape (else the first step would fail mid-epoch)."""
    for group, was_number in zip(optimizer.param_groups, numbers):
        for key in was_number:
            if not _is_number(group.get(key)):
                raise _misfit("optimizer state", f"{key} is not a number")
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if value is not None and not _is_number(value) and not (isinstance(value, torch.Tensor) and (
                        value.dim() == 0 or value.shape == param.shape)):
                    raise _misfit("optimizer state", f"{name} of a {tuple(param.shape)} parameter")


def _check_schedule(scheduler, state: dict) -> None:
    """The schedule's numbers and lists keep their kind and length (load_state_dict takes anything)."""
    mine = scheduler.state_dict()
    for key, value in state.items():
        # load_state_dict sets every key as an attribute: one of another name (its optimizer) would be replaced.
        if not isinstance(key, str) or (key not in mine and hasattr(scheduler, key)):
            raise _misfit("schedule", f"{str(key)[:40]} is not one of its settings")
        if key in mine and not _same_kind(value, mine[key]):
            raise _misfit("schedule", f"{key} is {'None' if value is None else 'a ' + type(value).__name__}")


def _same_kind(value, reference) -> bool:
    """A number where `reference` has one, a list of as many such items where it has a list (None: None or a dict,
    a LambdaLR's lambda state); anything else is left to the schedule (its flags differ between PyTorch versions)."""
    if _is_number(reference):
        return _is_number(value)
    if isinstance(reference, list):
        return isinstance(value, list) and len(value) == len(reference) and all(
            _same_kind(v, r) for v, r in zip(value, reference))
    if reference is None:
        return value is None or isinstance(value, dict)
    return True
