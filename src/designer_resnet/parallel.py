"""Work over many items: an ordered, bounded thread map, loader-worker sizing, and when to show progress."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

A = TypeVar("A")
R = TypeVar("R")
# A progress bar is shown from this many items on; fewer finish before one would help.
PROGRESS_MIN = 500


def default_workers() -> int:
    """Threads for file copying/decoding: I/O-bound, so a few per core."""
    return max(2, min(16, (os.cpu_count() or 1) * 2))


def ordered_map(fn: Callable[[A], R], items: Iterable[A], workers: int | None = None) -> Iterator[R]:
    """Like `map(fn, items)` on a thread pool: results in input order, at most
    4 × workers items in flight so memory does not grow with the input."""
    workers = workers or default_workers()
    window = workers * 4
    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight: deque = deque()
        for item in items:
            in_flight.append(pool.submit(fn, item))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def processes_per_node(wanted: int, gpus: int) -> int:
    """Processes on one node: one per GPU up to `wanted` (Azure ML's and torchrun's rule), 1 on a CPU-only node."""
    return max(1, min(wanted, gpus)) if gpus else 1


# vCPUs a GPU training process keeps for itself: its Python loop and kernel launches, and the thread that pins
# batches. Its loader workers get the rest of its share of the node.
TRAINER_CPUS = 2
# Batches each loader worker prepares ahead (DataLoader's prefetch_factor default).
PREFETCH = 2


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and torchrun may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(on_gpu: bool, processes_per_node: int = 1) -> int:
    """DataLoader processes for one training or scoring process.

    On a GPU node, each process's share of the vCPUs less TRAINER_CPUS: decoding
    and augmenting is the work that must keep pace with the GPU (ResNet-50 at
    3,000 images/s needs 8 to 16 cores of today's per-image work), so no fixed
    cap: an ND H100 v5 node gives each of its 8 GPUs 12 vCPUs, 10 workers.
    On a CPU the cores belong to the model: none up to 4 cores, then a quarter.
    """
    per_process = max(1, available_cpus() // max(1, processes_per_node))
    if on_gpu:
        return max(1, per_process - TRAINER_CPUS)
    return 0 if per_process <= 4 else min(4, per_process // 4)


def shared_memory_bytes(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory file system batches travel through from workers (None where there is none)."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize


def workers_within_shared_memory(workers: int, batch_bytes: int, processes_per_node: int = 1,
                                 free: int | None = None) -> int:
    """`workers`, fewer if their batches in flight would fill more than half of this process's share of /dev/shm.

    Each worker holds up to PREFETCH batches there; a full /dev/shm kills the
    run with a bus error (Azure ML's default shm_size is 2g: set shm_size).
    """
    free = shared_memory_bytes() if free is None else free
    if not workers or free is None or batch_bytes <= 0:
        return workers
    budget = free // 2 // max(1, processes_per_node)
    return max(1, min(workers, budget // (PREFETCH * batch_bytes)))
