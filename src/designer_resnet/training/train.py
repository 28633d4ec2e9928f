"""Train PyTorch Model, top to bottom: data, model, one epoch, evaluation, main loop.

The same code runs single-process (CPU or one GPU) and as DDP under torchrun,
Azure ML's torch.distributed launcher or MPI. Only rank 0 writes anything.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..directories import StagedOutput
from ..directories.image_directory import ImageDirectory
from ..errors import UserError
from ..models.model_directory import read_untrained, write_trained
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from ..tracking import StepLog
from .batch_norm import synchronise_batch_norm
from .checkpoint import CHECKPOINT, load_checkpoint, run_identity, save_checkpoint
from .data import ImageDataset, batches, check_datasets, transforms_for
from .distributed import DistInfo, init_distributed, shutdown
from .loaders import STREAM_AUGMENT, STREAM_PROCESS, epoch_seed, make_loaders
from .report import METRICS_FILE, epoch_metrics, plot_curves

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 16
    warmup_step_number: int = 0
    learning_rate: float = 0.001
    random_seed: int = 1
    patience: int = 3
    print_frequency: int = 10
    sync_batch_norm: bool = False  # BatchNorm statistics over the global batch (training.batch_norm)
    workers: int | None = None


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
class TrainResult:
    history: list[EpochResult]
    model: nn.Module | None  # the best epoch's model on CPU (rank 0), as written
    best_epoch: int


class TerminationRequested(UserError):
    """SIGTERM arrived (Azure ML pre-empting a low-priority node): stopped after keeping the last checkpoint."""


class _SigtermWatch:
    """Turns SIGTERM into a flag that the training loop checks, so a checkpoint is never cut short."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        if not self.requested:
            log.warning("SIGTERM received: stopping at the next step")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int, power: float = 0.9):
    """Linear warmup over `warmup` steps, then polynomial decay to 0 at `total`."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - progress) ** power

    return factor


def _all_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if info.enabled:
        dist.all_reduce(t)
    return t.tolist()


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device):
    """A batch on the device; channels_last on CUDA, where convolutions are faster in it."""
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


def _stop_requested(sigterm: _SigtermWatch | None, device, info: DistInfo) -> bool:
    """SIGTERM on any process stops all of them at the same point (a collective, once an epoch under DDP)."""
    if sigterm is None:
        return False
    if not info.enabled:
        return sigterm.requested
    return _all_sum([float(sigterm.requested)], device, info)[0] > 0


def _terminated(epoch: int, checkpoint_dir: Path | None, *, during: bool):
    where = f"during epoch {epoch}" if during else f"after epoch {epoch}"
    if checkpoint_dir is None:
        raise TerminationRequested(f"training stopped by SIGTERM {where}; nothing was kept: give checkpoint_path "
                                   "to be able to resume a stopped run")
    kept = epoch - 1 if during else epoch
    what = f"the checkpoint of epoch {kept}" if kept else "no checkpoint yet"
    raise TerminationRequested(f"training stopped by SIGTERM {where}; checkpoint_path {checkpoint_dir} keeps {what}: "
                               "rerun with the same checkpoint_path to resume")


def train_one_epoch(model, loader, optimizer, scheduler, device, cfg: TrainConfig, epoch: int, info: DistInfo,
                    sigterm: _SigtermWatch | None = None):
    model.train()
    criterion = nn.CrossEntropyLoss()
    amp = device.type == "cuda"
    total_loss = total_wrong = seen = 0.0
    start = time.perf_counter()
    for step, (images, targets) in enumerate(batches(loader), 1):
        if sigterm is not None and sigterm.requested and not info.enabled:
            break  # single process: stop now (the caller raises); under DDP all ranks stop at the epoch's end
        images, targets = to_device(images, targets, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        n = targets.numel()
        total_loss += loss.item() * n
        total_wrong += (logits.argmax(1) != targets).sum().item()
        seen += n
        if info.is_main and cfg.print_frequency and step % cfg.print_frequency == 0:
            log.info("epoch %d [%d/%d] loss %.4f lr %.6f", epoch, step, len(loader), loss.item(),
                     optimizer.param_groups[0]["lr"])
    elapsed = time.perf_counter() - start
    loss_sum, wrong, count = _all_sum([total_loss, total_wrong, seen], device, info)
    return loss_sum / max(count, 1), wrong / max(count, 1), count / elapsed


@torch.no_grad()
def evaluate(model, loader, device, info: DistInfo):
    """Each rank scores its own shard with the plain module, on rank 0's BatchNorm statistics.

    Not through DDP's forward: that broadcasts buffers, a collective, and a rank whose shard
    is empty (fewer validation images than processes) would never join it.
    """
    model = _unwrap(model)
    if info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    amp = device.type == "cuda"
    loss_sum = top1 = top5 = seen = 0.0
    for images, targets in batches(loader):
        images, targets = to_device(images, targets, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += criterion(logits, targets).item()
        k = min(5, logits.shape[1])
        best = logits.topk(k, dim=1).indices
        top1 += (best[:, 0] == targets).sum().item()
        top5 += (best == targets[:, None]).any(dim=1).sum().item()
        seen += targets.numel()
    loss_sum, top1, top5, seen = _all_sum([loss_sum, top1, top5, seen], device, info)
    return loss_sum / seen, top1 / seen, top5 / seen


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(untrained_dir, train_dir, valid_dir, output_dir, cfg: TrainConfig, *, checkpoint_dir=None) -> TrainResult:
    """Train and write the best epoch's model to `output_dir` (rank 0)."""
    info = init_distributed()
    try:
        with contextlib.ExitStack() as stack:
            sigterm = stack.enter_context(_SigtermWatch())  # first in, last out: covers the clean-up too
            # Rank 0 claims the output first: a non-empty folder fails before any training.
            stage = stack.enter_context(StagedOutput(output_dir, output_name="trained_model")) if info.is_main else None
            return _train(untrained_dir, train_dir, valid_dir, output_dir, cfg, checkpoint_dir, info, stage, stack,
                          sigterm)
    finally:
        shutdown(info)


def _train(untrained_dir, train_dir, valid_dir, output_dir, cfg, checkpoint_dir, info: DistInfo,
           stage: StagedOutput | None, stack: contextlib.ExitStack, sigterm: _SigtermWatch):
    untrained = read_untrained(untrained_dir, input_name="untrained_model")
    train_dir_ = ImageDirectory.load(train_dir, input_name="training_data")
    valid_dir_ = ImageDirectory.load(valid_dir, input_name="validation_data")
    check_datasets(train_dir_, valid_dir_, cfg.batch_size)
    categories = train_dir_.categories
    class_index = {c: i for i, c in enumerate(categories)}
    ops = transforms_for(train_dir_, valid_dir_, IMAGENET_MEAN, IMAGENET_STD)

    device = torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.random_seed)
    model = untrained.build(len(categories))
    if cfg.sync_batch_norm:
        model = synchronise_batch_norm(model, device)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if device.type == "cuda" else None)

    train_set = ImageDataset(train_dir_, ops.train_ops, class_index, ops.raw_size)
    valid_set = ImageDataset(valid_dir_, ops.valid_ops, class_index, ops.raw_size)
    train_loader, train_sampler, valid_loader = make_loaders(
        train_set, valid_set, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.random_seed, info=info,
        device=device)
    # The designer scales the learning rate with the number of processes.
    lr = cfg.learning_rate * info.world_size
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    total_steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_step_number, total_steps))

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    history: list[EpochResult] = []
    best_top1, best_state, best_epoch = -1.0, None, 0
    best_loss, stale = math.inf, 0
    start_epoch = 1
    identity = run_identity(asdict(cfg), info, untrained, train_dir_, valid_dir_)
    ckpt = load_checkpoint(checkpoint_dir, identity)
    if ckpt is not None:
        _unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        history = [EpochResult(**h) for h in ckpt["history"]]
        best_top1, best_epoch, best_loss, stale = ckpt["best_top1"], ckpt["best_epoch"], ckpt["best_loss"], ckpt["stale"]
        best_state = ckpt["best_model"]
        start_epoch = ckpt["epoch"] + 1
        torch.set_rng_state(ckpt["rng_cpu"])
        if info.is_main:
            log.info("resuming after epoch %d from %s", ckpt["epoch"], checkpoint_dir / CHECKPOINT)

    metrics = None
    if stage is not None:
        # training_metrics.csv in the output; MLflow too where a tracking server is set (Azure ML).
        metrics = StepLog(stage.path, Path(output_dir), "train_pytorch_model",
                          {**asdict(cfg), "world_size": info.world_size,
                           **{f"model_{k}": v for k, v in untrained.init_params.items()}}, file_name=METRICS_FILE)
        stack.callback(metrics.close)
        for past in history:
            metrics.log(epoch_metrics(past), step=past.epoch)
    # A checkpoint of a run that stopped early has nothing left to train.
    last_epoch = start_epoch - 1 if ckpt and ckpt.get("stopped") else cfg.epochs
    for epoch in range(start_epoch, last_epoch + 1):
        # Per-epoch seeds make shuffling and augmentation independent of history, so a resumed run matches.
        # Random ops draw from a seed per (epoch, image), which loader workers read from shared memory:
        # the same augmentations with any number of workers, persistent or not, resumed or not.
        torch.manual_seed(epoch_seed(cfg.random_seed, epoch, info.rank, STREAM_PROCESS))
        train_set.set_epoch_seed(epoch_seed(cfg.random_seed, epoch, 0, STREAM_AUGMENT))
        train_sampler.set_epoch(epoch)
        epoch_lr = optimizer.param_groups[0]["lr"]
        train_loss, train_error, speed = train_one_epoch(model, train_loader, optimizer, scheduler, device, cfg, epoch,
                                                         info, sigterm)
        if _stop_requested(sigterm, device, info):
            _terminated(epoch, checkpoint_dir, during=True)
        valid_loss, top1, top5 = evaluate(model, valid_loader, device, info)
        result = EpochResult(epoch, epoch_lr, train_loss, train_error, speed, valid_loss, top1, top5)
        history.append(result)
        if metrics is not None:
            metrics.log(epoch_metrics(result), step=result.epoch)
        if top1 > best_top1:
            best_top1, best_epoch = top1, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}
        if valid_loss < best_loss:
            best_loss, stale = valid_loss, 0
        else:
            stale += 1
        stop = stale >= cfg.patience and epoch < cfg.epochs
        if info.is_main:
            log.info("epoch %d/%d: train loss %.4f error %.4f (%.0f img/s), valid loss %.4f top-1 %.4f top-5 %.4f%s",
                     epoch, cfg.epochs, train_loss, train_error, speed, valid_loss, top1, top5,
                     "  (best)" if best_epoch == epoch else "")
            if checkpoint_dir is not None:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                save_checkpoint(checkpoint_dir / CHECKPOINT, {
                    "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "config": asdict(cfg),
                    "model_name": untrained.model_name, "categories": categories,
                    "history": [asdict(h) for h in history], "best_top1": best_top1, "best_epoch": best_epoch,
                    "best_loss": best_loss, "stale": stale, "best_model": best_state,
                    "rng_cpu": torch.get_rng_state(), "stopped": stop, "identity": identity})
        if _stop_requested(sigterm, device, info):
            _terminated(epoch, checkpoint_dir, during=False)
        if stop:
            if info.is_main:
                log.info("early stop: validation loss has not decreased for %d epoch(s)", cfg.patience)
            break

    final = None
    if stage is not None:
        final = copy.deepcopy(_unwrap(model)).to("cpu")
        final.load_state_dict(best_state)
        write_trained(stage.path, final, untrained, categories, ops.preprocess,
                      extra={"best_epoch": best_epoch, "best_top1": best_top1, "epochs_run": len(history),
                             "world_size": info.world_size, "config": asdict(cfg)})
        from ..serving.pyfunc import save_mlflow_model  # mlflow is imported only by the writing process

        save_mlflow_model(stage.path)
        plot_curves(history, stage.path / "training_curves.png")
        log.info("best epoch %d: top-1 %.4f; model written to %s", best_epoch, best_top1, output_dir)
    return TrainResult(history, final, best_epoch)
