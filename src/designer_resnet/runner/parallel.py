"""A local stand-in for Azure ML's parallel job driver: an entry script's init/run/shutdown over mini-batches.

What Azure's driver does, and this does too: every file below the input
folder, subfolders and metadata files included, split into mini-batches of
`mini_batch_size` files; `processes` worker processes (Azure: nodes x
max_concurrency_per_instance), each importing the entry script by its path
with the program arguments on `sys.argv`, calling `init()` once, then
`run(mini_batch)` with lists of absolute paths for as long as mini-batches
remain, then `shutdown()`; a mini-batch whose `run` raises is tried again,
possibly by another process, up to `max_retries` times, and so is one whose
worker process died (a replacement process takes its place); the job fails
when more mini-batches than `mini_batch_error_threshold` (-1: any number)
fail on every try. Not modelled: the per-mini-batch timeout.

    python -m designer_resnet.runner.parallel --entry-script E --input-data D --mini-batch-size N
        [--processes P] [--max-retries R] [--mini-batch-error-threshold T] -- PROGRAM ARGUMENTS...
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import queue
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..arguments import ComponentArgumentParser, int_in
from ..errors import UserError, run_entry


@dataclass
class DriverReport:
    mini_batches: int = 0
    items: int = 0  # results `run` returned, over all mini-batches
    tries: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (mini-batch, last error) after every retry


def mini_batches(input_data: str | Path, size: int) -> list[list[str]]:
    """Every file below `input_data` as absolute paths, in mini-batches of `size` files."""
    files = sorted(str(path.resolve()) for path in Path(input_data).rglob("*") if path.is_file())
    return [files[start:start + size] for start in range(0, len(files), size)]


def _load_entry(entry_script: str):
    spec = importlib.util.spec_from_file_location(Path(entry_script).stem, entry_script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(entry_script: str, argv: list[str], tasks, results, running, slot: int) -> None:
    """One worker process: init, then run on mini-batches until the sentinel, then shutdown.

    `running[slot]` holds the mini-batch it is running (-1: none), in shared memory, so the driver
    knows what a worker that dies was doing.
    """
    try:
        sys.argv = [entry_script, *argv]
        module = _load_entry(entry_script)
        if hasattr(module, "init"):
            module.init()
    except BaseException as exc:  # init failing fails the job, as on Azure
        results.put(("init", None, _one_line(exc), traceback.format_exc()))
        return
    while (task := tasks.get()) is not None:
        number, batch = task
        running[slot] = number
        try:
            answer = module.run(batch)
            results.put(("done", number, len(answer), None))
        except Exception as exc:
            results.put(("failed", number, _one_line(exc), traceback.format_exc()))
        running[slot] = -1
    if hasattr(module, "shutdown"):
        module.shutdown()


def _one_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"


def drive(entry_script: str | Path, input_data: str | Path, program_arguments: list[str], *, mini_batch_size: int,
          processes: int = 2, max_retries: int = 3, mini_batch_error_threshold: int = -1, log=print) -> DriverReport:
    """Run the entry script over the input's mini-batches in `processes` worker processes (see the module doc)."""
    batches = mini_batches(input_data, mini_batch_size)
    report = DriverReport(mini_batches=len(batches))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, as on Azure's nodes
    tasks, results = context.Queue(), context.Queue()
    running = context.Array("q", [-1] * max(1, processes))  # per worker slot: the mini-batch it runs

    def start_worker(slot: int):
        running[slot] = -1
        worker = context.Process(target=_worker, args=(str(entry_script), list(program_arguments), tasks, results,
                                                       running, slot))
        worker.start()
        return worker

    workers = [start_worker(slot) for slot in range(max(1, processes))]
    tries = {number: 0 for number in range(len(batches))}
    for number, batch in enumerate(batches):
        tasks.put((number, batch))
    pending = len(batches)

    finished: set[int] = set()

    def finish_try(number: int, detail: str | None, items: int = 0) -> None:
        nonlocal pending
        if number in finished:  # a worker that died just after reporting it
            return
        report.tries += 1
        tries[number] += 1
        if detail is None:
            report.items += items
            finished.add(number)
            pending -= 1
            return
        log(f"mini-batch {number} failed on try {tries[number]}: {detail}")
        if tries[number] <= max_retries:
            tasks.put((number, batches[number]))
        else:
            report.failed.append((number, detail))
            finished.add(number)
            pending -= 1

    try:
        while pending:
            try:
                kind, number, detail, trace = results.get(timeout=2)
            except queue.Empty:
                for slot, worker in enumerate(workers):  # one that died (out of memory, a crash) mid-mini-batch
                    if not worker.is_alive() and running[slot] >= 0:
                        finish_try(running[slot], f"its worker process ended (exit code {worker.exitcode})")
                        workers[slot] = start_worker(slot)
                if not any(worker.is_alive() for worker in workers):
                    raise UserError("parallel: every worker process ended with mini-batches left; see the log") from None
                continue
            if kind == "init":
                log(trace)
                raise UserError(f"parallel: init() failed in a worker process ({detail})")
            finish_try(number, None if kind == "done" else detail, detail if kind == "done" else 0)
    finally:
        for _ in workers:
            tasks.put(None)
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
    if mini_batch_error_threshold >= 0 and len(report.failed) > mini_batch_error_threshold:
        number, detail = report.failed[0]
        raise UserError(f"parallel: {len(report.failed)} mini-batch(es) failed on every try, more than "
                        f"mini_batch_error_threshold {mini_batch_error_threshold}; the first, {number}: {detail}")
    return report


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, program = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = ComponentArgumentParser(prog="designer_resnet.runner.parallel", description=__doc__.splitlines()[0])
    parser.add_argument("--entry-script", required=True)
    parser.add_argument("--input-data", required=True)
    parser.add_argument("--mini-batch-size", type=int_in(1, 10**7), required=True)
    parser.add_argument("--processes", type=int_in(1, 256), default=2)
    parser.add_argument("--max-retries", type=int_in(0, 100), default=3)
    parser.add_argument("--mini-batch-error-threshold", type=int_in(-1, 10**9), default=-1)
    args = parser.parse_args(ours)
    if not Path(args.input_data).is_dir():
        raise UserError(f"input_data: {args.input_data} is not a folder")
    report = drive(args.entry_script, args.input_data, program, mini_batch_size=args.mini_batch_size,
                   processes=args.processes, max_retries=args.max_retries,
                   mini_batch_error_threshold=args.mini_batch_error_threshold)
    print(f"parallel: {report.mini_batches} mini-batches, {report.items} items, {report.tries} tries in "
          f"{args.processes} worker processes; {len(report.failed)} mini-batch(es) failed on every try")


if __name__ == "__main__":
    sys.exit(run_entry(main))
