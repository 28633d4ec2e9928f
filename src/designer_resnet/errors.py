"""User-facing errors and the one wrapper every entry point runs under."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A problem the user can fix (bad input, bad parameter, wrong port).

    The message is printed as one line; it should name the input and the fix.
    """


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def _configure_logging(debug: bool) -> None:
    """Progress (INFO) to stdout; warnings and errors to stderr, so a failure's
    stderr is exactly its one error line plus any warnings."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    out.setFormatter(logging.Formatter("%(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(out)
    root.addHandler(err)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def _end_process(code: int) -> None:
    """Run the other exit handlers, flush, and end the process without tearing the interpreter down.

    Registered last, so it is the first exit handler to run; every other one
    (logging, DataLoader workers, temporary folders, coverage) still runs, once,
    here. What is skipped is the interpreter's teardown, which in a process that
    imported torch, mlflow and matplotlib is 0.7-1.5 s of garbage-collection
    passes over half a million objects.
    """
    atexit.unregister(_end_process)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # C-level stdio buffers of extension libraries
    except Exception:
        pass
    os._exit(code)


def run_entry(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point: UserError becomes one stderr line and exit code 1.

    `--debug` anywhere in argv shows the full traceback instead.

    When `main` is the process's own (a component run as `python -m`), what
    its imports built (torch alone: 300,000 objects) lives until the exit, so
    it is frozen out of the garbage collector's full passes, which otherwise
    re-scan it a few times a run, and the process ends without tearing it
    down (_end_process).
    """
    own = getattr(main, "__module__", None) == "__main__"
    if own:
        gc.freeze()
    try:
        code = _run(main, argv)
    except BaseException:
        if own:
            gc.unfreeze()  # an ordinary exit after the traceback
        raise
    if own:
        atexit.register(_end_process, code)
    return code


def _run(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    _configure_logging(debug)
    try:
        main(argv)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
