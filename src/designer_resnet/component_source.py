"""The one definition of each component's interface: `designer_resnet/components/<name>.yaml`.

A source lies beside its entry module, so every copy of the package (an
installation, or the code snapshot Azure ML runs a component from) has it.

A source names the component's ports and parameters with their designer types,
defaults, ranges, enum values and descriptions, and its command. From it:
`components/generate.py` writes both spec flavours; `build_parser` builds the
entry module's command line (so a local run accepts exactly what Azure ML
accepts); `value_parser` checks a value as the spec would, for the local runner.

Two keys exist only in sources and never reach a spec: `local_options` (flags
of the entry module that Azure ML never sets, such as loader workers) and an
output's `optional: true` (the entry module runs without it; on Azure ML every
output gets a folder).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .arguments import ComponentArgumentParser, boolean, float_in, int_in
from .errors import UserError
from .specs import DESIGNER_PORT_TYPES, V2_PARAM_TYPE, flags

SOURCES = Path(__file__).resolve().parent / "components"
# Sources use the designer-typed command syntax: `{inputs.x}`, `[optional block]`.
SOURCE_SYNTAX = "typed"
LOCAL_OPTIONS = "local_options"
_INTEGER, _FLOAT, _BOOLEAN, _STRING, _ENUM = "Integer", "Float", "Boolean", "String", "Enum"
# A v2 spec's parameter type back to the designer's (an Enum is a v2 string with `enum`).
_DESIGNER_TYPE = {"integer": _INTEGER, "number": _FLOAT, "boolean": _BOOLEAN, "string": _STRING}


def names() -> list[str]:
    """Every component's name, sorted."""
    return sorted(p.stem for p in SOURCES.glob("*.yaml"))


@functools.cache
def load(name: str) -> dict:
    """A component's source, parsed once per process."""
    path = SOURCES / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"component {name!r} does not exist; the components are {', '.join(names())}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def is_port(entry: dict) -> bool:
    """True for a folder port (any designer port type, or a v2 data type), False for a parameter."""
    kind = str(entry.get("type", ""))
    return kind in DESIGNER_PORT_TYPES or (kind not in V2_PARAM_TYPE and kind not in _DESIGNER_TYPE)


def parameters(name: str) -> dict[str, dict]:
    """The component's parameters (inputs that are not ports), in source order."""
    return {k: v for k, v in load(name)["inputs"].items() if not is_port(v)}


def defaults(name: str) -> dict[str, Any]:
    """Each parameter's default, as the source gives it (None where it has none)."""
    return {k: v.get("default") for k, v in parameters(name).items()}


def default(name: str, parameter: str) -> Any:
    """One parameter's (or local option's) default, for a library function or config that mirrors the component."""
    entry = parameters(name).get(parameter) or (load(name).get(LOCAL_OPTIONS) or {}).get(parameter)
    if entry is None:
        raise KeyError(f"{name} has no parameter {parameter!r}")
    return entry.get("default")


def _enum(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(repr, choices))}")
        return text

    parse.__name__ = "choice"
    return parse


def value_parser(entry: dict) -> Callable[[str], Any]:
    """Text -> value, as a spec entry of either flavour declares it; argparse.ArgumentTypeError when it may not be."""
    kind = str(entry.get("type"))
    kind = _DESIGNER_TYPE.get(kind, kind)
    if entry.get("enum") is not None or kind == _ENUM:
        return _enum([str(v) for v in entry.get("enum") or []])
    if kind == _INTEGER:
        return int_in(entry.get("min"), entry.get("max"))
    if kind == _FLOAT:
        return float_in(entry.get("min"), entry.get("max"))
    if kind == _BOOLEAN:
        return boolean
    return str


def _help(entry: dict) -> str:
    text = " ".join(str(entry.get("description", "")).split())
    low, high = entry.get("min"), entry.get("max")
    if low is not None or high is not None:
        text += f" Range [{'-inf' if low is None else low}, {'inf' if high is None else high}]."
    return text.replace("%", "%%")  # argparse formats help with %


def _add(parser: ComponentArgumentParser, flag: str, entry: dict, *, required: bool) -> None:
    if is_port(entry):
        parser.add_argument(flag, required=required, default=None, metavar="PATH", help=_help(entry))
        return
    options: dict[str, Any] = {"default": entry.get("default"), "help": _help(entry)}
    if entry.get("enum") is not None:
        options["choices"] = [str(v) for v in entry["enum"]]
    else:
        options["type"] = value_parser(entry)
        if str(entry.get("type")) == _BOOLEAN:
            options["metavar"] = "BOOL"
    parser.add_argument(flag, **options)


def build_parser(name: str) -> ComponentArgumentParser:
    """The entry module's parser: one flag per port and parameter as the command passes it, plus local options."""
    source = load(name)
    parser = ComponentArgumentParser(prog=name, description=" ".join(str(source["description"]).split()))
    command_flags = flags(str(source["command"]), SOURCE_SYNTAX)
    for direction in ("inputs", "outputs"):
        for port, entry in source[direction].items():
            flag = command_flags.get((direction, port))
            if flag is None:
                raise UserError(f"{SOURCES / name}.yaml: {direction}.{port} is not in the command")
            optional = entry.get("optional") or (direction == "inputs" and not is_port(entry))
            _add(parser, flag, entry, required=not optional)
    for option, entry in (source.get(LOCAL_OPTIONS) or {}).items():
        _add(parser, f"--{option}", entry, required=False)
    return parser


@dataclass
class Arguments:
    """A parsed command line: folder ports by name, and parameters (with local options) by name."""

    ports: dict[str, str | None]
    params: dict[str, Any]


def parse(name: str, argv: Sequence[str] | None) -> Arguments:
    """Parse an entry module's command line; a bad value is one `error:` line and exit 1."""
    values = vars(build_parser(name).parse_args(argv))
    source = load(name)
    ports = {p for d in ("inputs", "outputs") for p, e in source[d].items() if is_port(e)}
    return Arguments({k: v for k, v in values.items() if k in ports},
                     {k: v for k, v in values.items() if k not in ports})
