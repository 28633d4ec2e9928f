"""User-facing errors and the one wrapper every entry point runs under."""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A problem the user can fix (bad input, bad parameter, wrong port).

    The message is printed as one line; it should name the input and the fix.
    """


def run_entry(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point: UserError becomes one stderr line and exit code 1.

    `--debug` anywhere in argv shows the full traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
