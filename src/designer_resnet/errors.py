"""User-facing errors and the one wrapper every entry point runs under."""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from .process import run_as_process


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


def run_entry(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point: UserError becomes one stderr line and exit code 1.

    `--debug` anywhere in argv shows the full traceback instead. When `main` is
    the process's own (a component run as `python -m`), the process then ends
    without the interpreter's teardown (process.run_as_process).
    """
    if getattr(main, "__module__", None) == "__main__":
        return run_as_process(lambda: _run(main, argv))
    return _run(main, argv)


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
