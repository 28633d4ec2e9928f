"""Per-epoch seeds, samplers and DataLoaders for training and validation.

One permutation of the training set per epoch, whatever the number of
processes: with W processes, the k-th batches of all ranks together are the
k-th batch of one process whose batch is W times larger (EpochShuffle).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import UserError
from ..parallel import loader_workers, workers_within_shared_memory
from .dataset import collate
from .distributed import DistInfo

log = logging.getLogger(__name__)

# Per-epoch seed streams (epoch_seed's `stream`); MixUp/CutMix draw from their own (training/recipe.py).
STREAM_PROCESS, STREAM_SHUFFLE, STREAM_AUGMENT, STREAM_MIX = 0, 1, 2, 3


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed for (seed, epoch, rank, stream), distinct for any number of processes and epochs."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank), int(stream)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class EpochShuffle(Sampler):
    """This rank's share of the epoch's permutation: every world_size-th index, from its rank on.

    The permutation depends on the seed and the epoch only, so any number of
    processes (and a resumed run) sees the same one. Each rank gets n // W
    indices, so all ranks run the same number of steps; the fewer than W left
    over sit this epoch out (a different few each epoch). A set smaller than
    the world is repeated so that every rank has one.
    """

    def __init__(self, n: int, seed: int, info: DistInfo):
        self.n, self.seed, self.rank, self.world = n, seed, info.rank, info.world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.n // self.world)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch, 0, STREAM_SHUFFLE))
        order = torch.randperm(self.n, generator=generator).tolist()
        total = len(self) * self.world
        order = (order * math.ceil(total / self.n))[:total]
        return iter(order[self.rank::self.world])


class ShardSampler(Sampler):
    """Every rank evaluates its own slice, no padding, so metrics count each image once."""

    def __init__(self, n: int, info: DistInfo):
        self.indices = list(range(info.rank, n, info.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def step_batch(batch_size: int, n: int, world_size: int) -> int:
    """Images in one training step of one process: `batch_size`, or the process's whole share when that is smaller."""
    return min(batch_size, max(1, n // world_size))


def check_batch_norm_batch(batch_size: int, n: int, info: DistInfo, sync_batch_norm: bool) -> None:
    """Refuse, before training, steps whose BatchNorm statistics would come from one image.

    Our networks (ResNet, DenseNet) normalise over the batch. One image per step
    crashes on small images ("Expected more than 1 value per channel") and, with
    sync_batch_norm on one process, makes the running variance infinite; on large
    ones each image is normalised by itself. BatchNorm counts the images of one
    process, or of all of them with sync_batch_norm.
    """
    per_process = step_batch(batch_size, n, info.world_size)
    if per_process * (info.world_size if sync_batch_norm else 1) >= 2:
        return
    if batch_size == 1:
        raise UserError("batch_size: 1 image per step is too few for the network's BatchNorm layers, which normalise "
                        "over the batch; use a batch size of 2 or more (the default is 16)")
    raise UserError(f"training_data: {n} images shared by {info.world_size} processes leave each process 1 image per "
                    f"step, too few for the network's BatchNorm layers; give at least {2 * info.world_size} training "
                    "images, run fewer processes, or set sync_batch_norm")


def make_loaders(train_set, valid_set, *, batch_size: int, workers: int | None, seed: int, info: DistInfo,
                 device: torch.device):
    """(training loader, its EpochShuffle, validation loader); `workers` None picks a number for the device."""
    if workers is None:
        workers = loader_workers(device.type == "cuda", info.local_world_size)
        if workers:
            # The larger of the two sets' items: on the device-decode path training items are JPEG bytes,
            # validation items decoded images.
            batch_bytes = batch_size * max(train_set.item_nbytes(), valid_set.item_nbytes())
            fitting = workers_within_shared_memory(workers, batch_bytes, info.local_world_size)
            if fitting < workers and info.is_main:
                log.warning("%d loader workers per process instead of %d: their batches would not fit in /dev/shm; "
                            "give the job more shared memory (resources.shm_size, e.g. 16g)", fitting, workers)
            workers = fitting
    if info.is_main:
        log.info("%d loader worker(s) per process", workers)
    if workers == 0:
        for name, dataset in (("training", train_set), ("validation", valid_set)):
            if dataset.enable_cache():
                log.debug("caching decoded %s images in memory", name)
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0,
              "collate_fn": collate}
    sampler = EpochShuffle(len(train_set), seed, info)
    # Like the designer, a last partial batch is dropped (the shuffle changes which images each epoch):
    # a batch of one small image would fail in BatchNorm ("Expected more than 1 value per channel").
    # A share smaller than batch_size is one whole batch (check_batch_norm_batch refuses a share of one).
    train_loader = DataLoader(train_set, step_batch(batch_size, len(train_set), info.world_size), sampler=sampler,
                              drop_last=True, **common)
    valid_loader = DataLoader(valid_set, batch_size, sampler=ShardSampler(len(valid_set), info), **common)
    return train_loader, sampler, valid_loader
