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


def loader_workers(on_gpu: bool, processes_per_node: int = 1) -> int:
    """DataLoader processes: enough to feed a GPU; on CPU the cores belong to the model."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = max(1, cpus // max(1, processes_per_node))
    if on_gpu:
        return min(8, per_process)
    return 0 if per_process <= 4 else min(4, per_process // 4)
