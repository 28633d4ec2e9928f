"""Argument parsing shared by the component entry modules.

Azure renders a Boolean parameter as `True`/`False`; we accept any case of
true/false, yes/no and 1/0. Parse errors exit with code 1 and one line.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


class ComponentArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 1."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(1)


def boolean(text: str) -> bool:
    """Parse a designer Boolean (`True`, `false`, `1`, ...)."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def int_in(low: int | None = None, high: int | None = None):
    """An argparse type: an integer within [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        _check_range(value, low, high)
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float | None = None, high: float | None = None):
    """An argparse type: a finite number within [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        _check_range(value, low, high)
        return value

    parse.__name__ = "number"
    return parse


def _check_range(value, low, high) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise argparse.ArgumentTypeError(f"{value} is outside the valid range [{lo}, {hi}]")
