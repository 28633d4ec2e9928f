"""Train PyTorch Model: one epoch, evaluation, then the recipe (`_train`) and its steps in the order it takes them.

The same code runs single-process (CPU or one GPU) and as DDP under torchrun,
Azure ML's torch.distributed launcher or MPI. Only rank 0 writes anything.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..component_source import default
from ..compute import Compute, default_device
from ..directories import StagedOutput
from ..directories.image_directory import ImageDirectory
from ..errors import UserError
from ..models.model_directory import UntrainedModel, read_start, write_trained
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from ..tracking import StepLog
from .batch_norm import synchronise_batch_norm
from .checkpoint import CHECKPOINT, load_checkpoint, run_identity, save_checkpoint
from .dataset import ImageDataset, Transforms, batches, check_datasets, decode_plan, transforms_for
from .distributed import DistInfo, init_distributed, shutdown
from .loaders import STREAM_AUGMENT, STREAM_MIX, STREAM_PROCESS, check_batch_norm_batch, epoch_seed, make_loaders
from .recipe import (Recipe, RecipeOptions, build_optimizer, build_schedule, check_options, describe, freeze,
                     optimizer_steps, stretch_schedule)
from .recipe import lr_lambda  # noqa: F401  its former home: scripts and tests import it from here
from .report import METRICS_FILE, epoch_metrics, plot_curves
from .state import EpochResult, TrainingState

log = logging.getLogger(__name__)


_SPEC = "train_pytorch_model"


@dataclass
class TrainConfig(RecipeOptions):
    """Train PyTorch Model's parameters and local options, with the component's defaults.

    The recipe's (optimizer, schedule, loss, mixing, EMA, freezing) come from RecipeOptions (training/recipe.py).
    """

    epochs: int = default(_SPEC, "epochs")
    batch_size: int = default(_SPEC, "batch_size")
    warmup_step_number: int = default(_SPEC, "warmup_step_number")
    learning_rate: float = default(_SPEC, "learning_rate")
    random_seed: int = default(_SPEC, "random_seed")
    patience: int = default(_SPEC, "patience")
    print_frequency: int = default(_SPEC, "print_frequency")
    sync_batch_norm: bool = default(_SPEC, "sync_batch_norm")  # BatchNorm statistics over the global batch
    precision: str = default(_SPEC, "precision")  # auto: bf16 autocast on CUDA, fp32 on CPU (compute.Compute)
    memory_format: str = default(_SPEC, "memory_format")  # auto: channels_last on CUDA
    compile: bool = default(_SPEC, "compile")  # torch.compile the network
    jpeg_decode: str = default(_SPEC, "jpeg_decode")  # auto: JPEG files decoded in batches on the GPU
    workers: int | None = default(_SPEC, "workers")


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


def _all_sum(values: list, device: torch.device, info: DistInfo) -> list[float]:
    """Sums over all processes of numbers or 0-d tensors on the device; one transfer to the host."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if info.enabled:
        dist.all_reduce(t)
    return t.tolist()


def to_device(images, targets: torch.Tensor, dataset: ImageDataset, compute: Compute):
    """A loader batch as the network's input on the device: decoded and normalised there, in the chosen layout."""
    images = dataset.device_batch(images, compute.device, compute.memory_format)
    return images, targets.to(compute.device, non_blocking=True)


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


def train_one_epoch(model, loader, optimizer, scheduler, compute: Compute, cfg: TrainConfig, epoch: int,
                    info: DistInfo, sigterm: _SigtermWatch | None = None, recipe: Recipe | None = None):
    """One pass over the loader; (mean loss, error rate, images/s) over all processes.

    The host never waits for the device inside a step: loss and error counts
    add up on the device, read once per print_frequency steps and once at the end.
    `recipe`: the run's (None: the designer's plain step). On a MixUp/CutMix batch a
    prediction counts as right when it names the class with the larger share of the image.
    """
    recipe = recipe or Recipe()
    recipe.train_mode(model)
    mix = recipe.mixer(epoch_seed(cfg.random_seed, epoch, info.rank, STREAM_MIX))
    device = compute.device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_wrong = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for step, (images, targets) in enumerate(batches(loader), 1):
        if sigterm is not None and sigterm.requested and not info.enabled:
            break  # single process: stop now (the caller raises); under DDP all ranks stop at the epoch's end
        images, targets = to_device(images, targets, loader.dataset, compute)
        labels = targets
        if mix is not None:
            images, labels = mix(images, targets)  # soft targets
            images, targets = compute.layout(images), labels.argmax(1)
        first, last, share = recipe.group(step, len(loader))
        with recipe.syncing(model, last):  # gradient accumulation: DDP all-reduces on the group's last batch
            with compute.autocast():
                logits = model(images)
                loss = recipe.criterion(logits, labels)
            if first:
                optimizer.zero_grad(set_to_none=True)
            (loss / share if share > 1 else loss).backward()
        if last:
            recipe.step(optimizer, scheduler)
        n = targets.numel()
        total_loss += loss.detach().double() * n
        total_wrong += (logits.argmax(1) != targets).sum()
        seen += n
        if info.is_main and cfg.print_frequency and step % cfg.print_frequency == 0:
            log.info("epoch %d [%d/%d] loss %.4f lr %.6f", epoch, step, len(loader), loss.item(),
                     optimizer.param_groups[0]["lr"])
    loss_sum, wrong, count = _all_sum([total_loss, total_wrong, seen], device, info)
    elapsed = time.perf_counter() - start  # after the transfer, which waits for the last step
    return loss_sum / max(count, 1), wrong / max(count, 1), count / elapsed


@torch.no_grad()
def evaluate(model, loader, compute: Compute, info: DistInfo):
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
    device = compute.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for images, targets in batches(loader):
        images, targets = to_device(images, targets, loader.dataset, compute)
        with compute.autocast():
            logits = model(images)
        logits = logits.float()
        loss_sum += criterion(logits, targets).double()
        k = min(5, logits.shape[1])
        best = logits.topk(k, dim=1).indices
        top1 += (best[:, 0] == targets).sum()
        top5 += (best == targets[:, None]).any(dim=1).sum()
        seen += targets.numel()
    loss_sum, top1, top5, seen = _all_sum([loss_sum, top1, top5, seen], device, info)
    return loss_sum / seen, top1 / seen, top5 / seen


def _unwrap(model: nn.Module) -> nn.Module:
    """The network itself, out of torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class _Process:
    """This process's part in a run: its rank, device and SIGTERM watch, and where it writes."""

    info: DistInfo
    compute: Compute  # the device, and how the network runs there
    sigterm: _SigtermWatch
    stage: StagedOutput | None  # rank 0's staging folder; the other ranks write nothing
    output_dir: str | Path  # as given, for the log line
    checkpoint_dir: Path | None

    @property
    def device(self) -> torch.device:
        return self.compute.device


@dataclass
class _Inputs:
    untrained: UntrainedModel
    train: ImageDirectory
    valid: ImageDirectory
    ops: Transforms

    @property
    def categories(self) -> list[str]:
        return self.train.categories


def train(untrained_dir, train_dir, valid_dir, output_dir, cfg: TrainConfig, *, checkpoint_dir=None) -> TrainResult:
    """Train and write the best epoch's model to `output_dir` (rank 0)."""
    check_options(cfg)
    info = init_distributed()
    try:
        with contextlib.ExitStack() as stack:
            sigterm = stack.enter_context(_SigtermWatch())  # first in, last out: covers the clean-up too
            if checkpoint_dir:
                _check_checkpoint_apart(Path(checkpoint_dir), Path(output_dir))
            # Rank 0 claims the output first: a non-empty folder fails before any training.
            stage = stack.enter_context(StagedOutput(output_dir, output_name="trained_model")) if info.is_main else None
            checkpoints = stack.enter_context(_checkpoint_folder(Path(checkpoint_dir))) if checkpoint_dir else None
            compute = Compute.resolve(_device(info), precision=cfg.precision, memory_format=cfg.memory_format,
                                      compile=cfg.compile)
            stack.enter_context(compute.compilation())
            run = _Process(info, compute, sigterm, stage, output_dir, checkpoints)
            return _train(untrained_dir, train_dir, valid_dir, cfg, run)
    finally:
        shutdown(info)


def _check_checkpoint_apart(checkpoint_dir: Path, output_dir: Path) -> None:
    """Refuse a checkpoint folder that is the trained model's, lies inside it or holds it: the model would ship it."""
    checkpoints, model = checkpoint_dir.resolve(), output_dir.resolve()
    if checkpoints == model:
        why = "is the trained_model folder too, so the model would carry the checkpoint"
    elif model in checkpoints.parents:
        why = f"is inside trained_model {output_dir}, so the model would carry the checkpoint"
    elif checkpoints in model.parents:
        why = f"holds trained_model {output_dir}, so the checkpoint folder would carry the model"
    else:
        return
    raise UserError(f"checkpoint_path: {checkpoint_dir} {why}; give checkpoints a folder of their own, neither "
                    "inside the trained model's nor holding it")


@contextlib.contextmanager
def _checkpoint_folder(folder: Path):
    """The checkpoint folder, created and shown writable before any training (a failure then costs no epoch).

    Folders it made are removed again, when still empty, if the run fails.
    """
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        what = "is a file" if blocker == folder else f"cannot be made: {blocker} is a file"
        raise UserError(f"checkpoint_path: {folder} {what}; give a folder (new, or holding a checkpoint to resume)")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".designer-resnet-probe-"):
            pass  # a named file: blob mounts may not support O_TMPFILE or unlinking an open file
    except OSError as exc:
        _remove_empty(created)
        raise UserError(f"checkpoint_path: cannot write in {folder} ({exc.strerror}); give a writable folder") from None
    try:
        yield folder
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _train(untrained_dir, train_dir, valid_dir, cfg: TrainConfig, run: _Process) -> TrainResult:
    """The recipe: inputs, model, loaders, optimizer, resume, the epochs, the best epoch's model written."""
    inputs = _read_inputs(untrained_dir, train_dir, valid_dir, cfg, run.info)
    seed_everything(cfg.random_seed)
    model = _build_model(inputs.untrained, inputs.categories, cfg, run)
    train_loader, valid_loader = _loaders(inputs, cfg, run)
    optimizer, scheduler = _optimizer(_unwrap(model), cfg, len(train_loader), run.info.world_size)
    if run.info.is_main:
        log.info("computing on %s", run.compute.describe())
        _warn_small_gpu_batch(train_loader.batch_size, cfg, run.compute)
        if describe(cfg):
            log.info("recipe: %s", describe(cfg))
    recipe = Recipe.build(cfg, _unwrap(model), train_loader.dataset.targets, len(inputs.categories), run.device,
                          cfg.epochs * optimizer_steps(len(train_loader), cfg))

    state = TrainingState(epochs=cfg.epochs, patience=cfg.patience)
    # `precision` as it resolved here: auto on a CPU and fp32 are the same run, auto on a GPU and on a CPU are not.
    identity = run_identity({**asdict(cfg), "precision": run.compute.precision}, run.info, inputs.untrained,
                            inputs.train, inputs.valid)
    checkpoint = load_checkpoint(run.checkpoint_dir, identity)
    if checkpoint is not None:
        state.restore(checkpoint, _unwrap(model), optimizer, scheduler, ema=recipe.ema)
        stretch_schedule(scheduler, cfg.warmup_step_number, optimizer_steps(len(train_loader), cfg), cfg.epochs)
        if run.info.is_main:
            log.info("resuming after epoch %d from %s", state.epoch, run.checkpoint_dir / CHECKPOINT)

    with _metrics_log(run, cfg, inputs.untrained, state.history) as metrics:
        for epoch in state.epochs_left():
            _seed_epoch(train_loader, cfg.random_seed, epoch, run.info)
            lr = optimizer.param_groups[0]["lr"]
            trained = train_one_epoch(model, train_loader, optimizer, scheduler, run.compute, cfg, epoch, run.info,
                                      run.sigterm, recipe)
            if _stop_requested(run.sigterm, run.device, run.info):
                _terminated(epoch, run.checkpoint_dir, during=True)
            # With EMA on, the average is what is scored, kept as the best epoch's weights and written.
            scored = recipe.evaluated(_unwrap(model))
            result = EpochResult(epoch, lr, *trained, *evaluate(scored, valid_loader, run.compute, run.info))
            state.record(result, scored.state_dict)
            _report_epoch(result, state, metrics, run.info)
            if run.info.is_main and run.checkpoint_dir is not None:
                run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                save_checkpoint(run.checkpoint_dir / CHECKPOINT, state.to_checkpoint(
                    _unwrap(model), optimizer, scheduler, identity=identity, config=asdict(cfg),
                    model_name=inputs.untrained.model_name, categories=inputs.categories, ema=recipe.ema))
            if _stop_requested(run.sigterm, run.device, run.info):
                _terminated(epoch, run.checkpoint_dir, during=False)
            if state.stopped_early:
                if run.info.is_main:
                    log.info("early stop: validation loss has not decreased for %d epoch(s)", state.patience)
                break
        final = _write_model(model, state, inputs, cfg, run)
    return TrainResult(state.history, final, state.best_epoch)


def _device(info: DistInfo) -> torch.device:
    """This process's GPU where there is one, else the CPU (compute.default_device)."""
    device = default_device(info.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick its fastest kernels
    return device


# Images per GPU step below which a ResNet step is too short to keep the GPU busy (launch-bound: the host
# issues kernels no faster than the GPU finishes them).
GPU_BATCH_MIN = 64


def _warn_small_gpu_batch(batch_size: int, cfg: TrainConfig, compute: Compute) -> None:
    """Say once, on a GPU, that a small batch leaves it idle, and what to use instead (README: "Training on GPUs")."""
    if compute.device.type != "cuda" or batch_size >= GPU_BATCH_MIN:
        return
    scaled = cfg.learning_rate * 256 / batch_size
    log.warning("batch_size %d leaves the GPU idle between steps; use 128 to 256 images per GPU and scale "
                "learning_rate with it (the linear rule: %.4g at batch 256 for your %.4g at %d)",
                batch_size, scaled, cfg.learning_rate, batch_size)


def _read_inputs(untrained_dir, train_dir, valid_dir, cfg: TrainConfig, info: DistInfo) -> _Inputs:
    """The three input ports, checked against each other: a user's mistake is one line before any training."""
    untrained = read_start(untrained_dir, input_name="untrained_model")  # or a trained model, to continue
    train_images = ImageDirectory.load(train_dir, input_name="training_data")
    valid_images = ImageDirectory.load(valid_dir, input_name="validation_data")
    check_datasets(train_images, valid_images, cfg.batch_size)
    check_batch_norm_batch(cfg.batch_size, len(train_images), info, cfg.sync_batch_norm)
    ops = transforms_for(train_images, valid_images, IMAGENET_MEAN, IMAGENET_STD)
    return _Inputs(untrained, train_images, valid_images, ops)


def _build_model(untrained: UntrainedModel, categories: list[str], cfg: TrainConfig, run: _Process) -> nn.Module:
    """The network on this process's device, its frozen parts frozen; in DDP when there are several processes."""
    model = untrained.build_for(categories)
    if cfg.sync_batch_norm:
        model = synchronise_batch_norm(model, run.device)
    frozen = freeze(model, cfg)  # before DDP, which takes only the parameters that need gradients
    if frozen and run.info.is_main:
        log.info("freeze %s: %d parameter tensors frozen", cfg.freeze, frozen)
    model = run.compute.place(model)
    if run.info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[run.info.local_rank]
                                                    if run.device.type == "cuda" else None)
    return run.compute.compiled(model)


def _loaders(inputs: _Inputs, cfg: TrainConfig, run: _Process):
    """(training loader, validation loader); the training loader's sampler and dataset take each epoch's seeds."""
    class_index = {c: i for i, c in enumerate(inputs.categories)}
    ops = inputs.ops
    decode = decode_plan(cfg.jpeg_decode, ops.train_ops, inputs.train, run.device)
    train_set = ImageDataset(inputs.train, ops.train_ops, class_index, ops.raw_size, decode=decode)
    valid_set = ImageDataset(inputs.valid, ops.valid_ops, class_index, ops.raw_size)
    train_loader, _, valid_loader = make_loaders(train_set, valid_set, batch_size=cfg.batch_size, workers=cfg.workers,
                                                 seed=cfg.random_seed, info=run.info, device=run.device)
    return train_loader, valid_loader


def _optimizer(model: nn.Module, cfg: TrainConfig, batches_per_epoch: int, world_size: int):
    """The optimizer over the bare network's trainable parameters, and its schedule (stepped every optimizer step).

    By default SGD with Nesterov momentum, warmup, then polynomial decay to 0 at the last step (training/recipe.py).
    """
    # The designer scales the learning rate with the number of processes.
    optimizer = build_optimizer(model, cfg, cfg.learning_rate * world_size)
    scheduler = build_schedule(optimizer, cfg, cfg.warmup_step_number, optimizer_steps(batches_per_epoch, cfg),
                               cfg.epochs)
    return optimizer, scheduler


@contextlib.contextmanager
def _metrics_log(run: _Process, cfg: TrainConfig, untrained: UntrainedModel, history: list[EpochResult]):
    """Rank 0's metric log (None elsewhere), starting with the epochs a resumed run already has."""
    if run.stage is None:
        yield None
        return
    # training_metrics.csv in the output; MLflow too where a tracking server is set (Azure ML).
    metrics = StepLog(run.stage.path, Path(run.output_dir), "train_pytorch_model",
                      {**asdict(cfg), "world_size": run.info.world_size,
                       **{f"model_{k}": v for k, v in untrained.init_params.items()}}, file_name=METRICS_FILE)
    try:
        for past in history:
            metrics.log(epoch_metrics(past), step=past.epoch)
        yield metrics
    finally:
        metrics.close()


def _seed_epoch(train_loader, seed: int, epoch: int, info: DistInfo) -> None:
    """Per-epoch seeds make shuffling and augmentation independent of history, so a resumed run matches.

    Random ops draw from a seed per (epoch, image), which loader workers read from shared memory:
    the same augmentations with any number of workers, persistent or not, resumed or not.
    """
    torch.manual_seed(epoch_seed(seed, epoch, info.rank, STREAM_PROCESS))
    train_loader.dataset.set_epoch_seed(epoch_seed(seed, epoch, 0, STREAM_AUGMENT))
    train_loader.sampler.set_epoch(epoch)


def _report_epoch(result: EpochResult, state: TrainingState, metrics: StepLog | None, info: DistInfo) -> None:
    """The epoch's row in the metric log and its log line (rank 0)."""
    if metrics is not None:
        metrics.log(epoch_metrics(result), step=result.epoch)
    if info.is_main:
        log.info("epoch %d/%d: train loss %.4f error %.4f (%.0f img/s), valid loss %.4f top-1 %.4f top-5 %.4f%s",
                 result.epoch, state.epochs, result.train_loss, result.train_error, result.images_per_second,
                 result.valid_loss, result.top1, result.top5, "  (best)" if state.best_epoch == result.epoch else "")


def _write_model(model: nn.Module, state: TrainingState, inputs: _Inputs, cfg: TrainConfig,
                 run: _Process) -> nn.Module | None:
    """Rank 0 writes the best epoch's weights as a trained ModelDirectory that is also an MLflow model."""
    if run.stage is None:
        return None
    # Contiguous on CPU whatever the training layout: what any loader of the weights expects.
    final = copy.deepcopy(_unwrap(model)).to("cpu", memory_format=torch.contiguous_format)
    final.load_state_dict(state.best_weights)
    write_trained(run.stage.path, final, inputs.untrained, inputs.categories, inputs.ops.preprocess,
                  extra={"best_epoch": state.best_epoch, "best_top1": state.best_top1, "epochs_run": len(state.history),
                         "world_size": run.info.world_size, "config": asdict(cfg)})
    from ..serving.pyfunc import save_mlflow_model  # mlflow is imported only by the writing process

    save_mlflow_model(run.stage.path)
    plot_curves(state.history, run.stage.path / "training_curves.png")
    log.info("best epoch %d: top-1 %.4f; model written to %s", state.best_epoch, state.best_top1, run.output_dir)
    return final
