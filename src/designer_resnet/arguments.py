"""Argument parsing shared by the component entry modules.

Azure renders a Boolean parameter as `True`/`False`; entry modules accept any
case of true/false, yes/no and 1/0, while a value a pipeline gives Azure ML
must be true or false (`azure_boolean`). An Integer may be written as a whole
float (`5.0`, `1e3`), as azure-ai-ml's own parser takes it. Parse errors exit
with code 1 and one line.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
# A value starting with "-" that is a number, not an option: argparse's own pattern misses -1e-05, -inf, -nan.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class ComponentArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 1.

    Only whole flag names are accepted (Azure ML renders them whole; a prefix
    would hide a typo), and `--flag -1e-05` passes the number to the flag.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

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


def azure_boolean(text: str) -> bool:
    """A Boolean as Azure ML accepts it in a pipeline: true or false, any case."""
    if str(text).strip().lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false (Azure ML accepts nothing else), got {text!r}")
    return boolean(text)


def int_in(low: int | None = None, high: int | None = None):
    """An argparse type: an integer within [low, high]."""

    def parse(text: str) -> int:
        value = _whole_number(str(text).strip())
        if value is None:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
        _check_range(value, low, high)
        return value

    parse.__name__ = "integer"
    return parse


def _whole_number(text: str) -> int | None:
    """`5`, or a whole number written as a float (`5.0`, `1e3`); None for anything else (`5.5`, `nan`, `x`)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


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
