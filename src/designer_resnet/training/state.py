"""A training run's state besides its current weights, and the checkpoint schema that keeps it.

TrainingState owns the rules the loop asks about (the best epoch, early
stopping, the epochs left) and the checkpoint's keys: `to_checkpoint` writes
them all and `restore` reads them all back. A checkpoint holds only dicts,
lists, tensors, numbers and strings, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


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
                      categories: list[str]) -> dict:
        """Everything a resumed run needs, as a plain dict; `model` is the bare module, not its DDP wrapper."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(), "epoch": self.epoch, "config": config,
                "model_name": model_name, "categories": categories,
                "history": [asdict(h) for h in self.history], "best_top1": self.best_top1,
                "best_epoch": self.best_epoch, "best_loss": self.best_loss, "stale": self.stale,
                "best_model": self.best_weights, "rng_cpu": torch.get_rng_state(), "stopped": self.stopped_early,
                "identity": identity}

    def restore(self, checkpoint: dict, model: nn.Module, optimizer, scheduler) -> None:
        """Continue from `checkpoint` (one whose identity was checked): this state, the weights, the optimizer,
        the schedule and the CPU random state. `model` is the bare module, not its DDP wrapper."""
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
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
