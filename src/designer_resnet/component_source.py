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

A source may also describe a parallel flavour (`parallel:`, Azure ML's
parallel job): the same inputs and parameters, its own outputs, and its entry
script. `flavour(name, PARALLEL)` is that flavour as a source of its own, whose
command is the program arguments: the command's input flags, then its outputs.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .arguments import ComponentArgumentParser, azure_boolean, boolean, float_in, int_in
from .errors import UserError
from .specs import DESIGNER_PORT_TYPES, V2_DATA_TYPES, flags

SOURCES = Path(__file__).resolve().parent / "components"
PARALLEL = "parallel"
# Sources use the designer-typed command syntax: `{inputs.x}`, `[optional block]`.
SOURCE_SYNTAX = "typed"
LOCAL_OPTIONS = "local_options"
_INTEGER, _FLOAT, _BOOLEAN, _STRING, _ENUM = "Integer", "Float", "Boolean", "String", "Enum"
# Every spelling of a parameter type azure-ai-ml loads, in either flavour (any case), as the designer names it.
_PARAMETER_TYPES = {"integer": _INTEGER, "number": _FLOAT, "float": _FLOAT, "double": _FLOAT, "boolean": _BOOLEAN,
                    "string": _STRING, "enum": _ENUM}
_PORT_TYPES = {t.lower() for t in (*DESIGNER_PORT_TYPES, *V2_DATA_TYPES)}


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


def flavour(name: str, kind: str | None = None) -> dict:
    """A component's source, or its `kind` flavour (PARALLEL) as a source of its own."""
    source = load(name)
    if kind is None:
        return source
    if kind != PARALLEL or not isinstance(source.get(PARALLEL), dict):
        raise UserError(f"component {name!r} has no {kind} flavour")
    section = source[PARALLEL]
    own_outputs = set(source["outputs"])
    lines = [line for line in str(source["command"]).splitlines()[1:]
             if not any(f"{{outputs.{port}}}" in line for port in own_outputs)]
    lines += [f"--{port} {{outputs.{port}}}" for port in section["outputs"]]
    return {**{k: v for k, v in source.items() if k not in (PARALLEL, LOCAL_OPTIONS)}, **section,
            "command": "\n".join(line.strip() for line in lines if line.strip()) + "\n"}


def _parameter_type(entry) -> str | None:
    """The designer's name of a parameter's type; None for a folder port; UserError for anything else."""
    if not isinstance(entry, dict):
        raise UserError(f"it must be a mapping with a `type`, got {entry!r}")
    kinds = entry.get("type") if isinstance(entry.get("type"), list) else [entry.get("type", "")]
    if kinds and all(str(k).lower() in _PORT_TYPES for k in kinds):  # a port, or an input taking several port types
        return None
    kind = str(entry.get("type", "")).lower()
    if kind in _PARAMETER_TYPES:
        return _PARAMETER_TYPES[kind]
    raise UserError(f"type {entry.get('type')!r} is neither a parameter type ({', '.join(sorted(_PARAMETER_TYPES))}) "
                    f"nor a folder port type")


def is_port(entry: dict) -> bool:
    """True for a folder port (a designer port type or a v2 data type), False for a parameter; UserError otherwise."""
    return _parameter_type(entry) is None


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


def _bounds(entry: dict) -> tuple[float | None, float | None]:
    """The entry's (min, max) as numbers; UserError for a bound that is not one, or min above max."""
    bounds = []
    for key in ("min", "max"):
        value = entry.get(key)
        try:
            bounds.append(None if value is None else float(value))
        except (TypeError, ValueError):
            raise UserError(f"its {key} {value!r} is not a number") from None
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise UserError(f"its min {entry['min']} is above its max {entry['max']}")
    return low, high


def _whole(bound: float | None) -> int | float | None:
    return int(bound) if bound is not None and bound.is_integer() else bound


def value_parser(entry: dict, *, azure: bool = False) -> Callable[[str], Any]:
    """Text -> value, as a spec entry of either flavour declares it; argparse.ArgumentTypeError when it may not be.

    `azure`: judge as Azure ML judges a pipeline's value (a Boolean is true or false,
    nothing else); entry modules are more lenient. UserError when the entry itself is
    not a valid parameter (unknown type, enum not a list, a bound not a number, min > max).
    """
    kind = _parameter_type(entry)
    if kind is None:
        raise UserError("it is a folder port, not a parameter")
    if entry.get("enum") is not None or kind == _ENUM:
        if not isinstance(entry.get("enum"), list) or not entry["enum"]:
            raise UserError(f"its enum must be a list of values, got {entry.get('enum')!r}")
        return _enum([str(v) for v in entry["enum"]])
    low, high = _bounds(entry)
    if kind == _INTEGER:
        return int_in(_whole(low), _whole(high))
    if kind == _FLOAT:
        return float_in(low, high)
    if kind == _BOOLEAN:
        return azure_boolean if azure else boolean
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


def build_parser(name: str, kind: str | None = None) -> ComponentArgumentParser:
    """The entry module's parser: one flag per port and parameter as the command passes it, plus local options."""
    source = flavour(name, kind)
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


def _raise(error: Exception):
    raise error


def parse(name: str, argv: Sequence[str] | None, *, kind: str | None = None,
          known_only: bool = False) -> Arguments:
    """Parse an entry module's command line; a bad value is one `error:` line and exit 1.

    `known_only` ignores arguments the component does not define (Azure's parallel driver adds its own).
    """
    parser = build_parser(name, kind)
    if known_only:  # an entry script inside another program's process: the error is raised, not printed and exited
        parser.error = lambda message: _raise(UserError(f"{parser.prog}: {message}"))
    values = vars(parser.parse_known_args(argv)[0] if known_only else parser.parse_args(argv))
    source = flavour(name, kind)
    ports = {p for d in ("inputs", "outputs") for p, e in source[d].items() if is_port(e)}
    return Arguments({k: v for k, v in values.items() if k in ports},
                     {k: v for k, v in values.items() if k not in ports})
