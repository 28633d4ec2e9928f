"""Reading a port folder's JSON, JSON Lines and YAML files, with one wording for every way one can be bad.

Each failure is one UserError line, `<input_name>: <path> <what is wrong>; <fix>`:
`does not exist`, `is a folder`, `cannot be read (<reason>)`, `is not valid JSON|YAML (<parser's words>)`,
`is not a JSON object|YAML mapping|... (it holds a <type>)`, `uses YAML aliases ...`, `is nested too deeply ...`.

YAML is read with a SafeLoader that refuses aliases: an alias repeats a node without repeating its text, so a file
of a few hundred bytes can stand for billions of values, and every later walk over it (validation, a digest, a copy)
pays for all of them. Nothing we or the built-in modules write uses one, and `write_port_yaml` never emits one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Iterator

import yaml

from ..errors import UserError

_REFUSE = object()
_FORMATS = ("JSON", "YAML")
_SHAPES = {dict: {"JSON": "JSON object", "YAML": "YAML mapping"}, list: {"JSON": "JSON list", "YAML": "YAML list"}}


class _AliasRefused(Exception):
    pass


class _PortLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing the first alias before it is expanded anywhere."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


class _PortDumper(yaml.SafeDumper):
    """yaml.safe_dump's dumper, writing a value seen twice twice rather than as an alias our reader refuses."""

    def ignore_aliases(self, data) -> bool:
        return True


def write_port_yaml(content, f: IO[str]) -> None:
    """Write `content` as block-style YAML, keys in their order, without aliases (read_port_file refuses them)."""
    yaml.dump(content, f, Dumper=_PortDumper, sort_keys=False, default_flow_style=False)


def read_port_file(path: str | Path, fmt: str, *, input_name: str, fix: str, kind: type | None = dict,
                   missing=_REFUSE):
    """The parsed content of one JSON or YAML file.

    fmt: "JSON" or "YAML", what the file must be whatever its name says.
    fix: the end of every error line, what the user should do (e.g. "rerun Init Image Transformation").
    kind: the top-level type the content must have (dict or list; None: anything, an empty YAML file too).
    missing: returned when the file does not exist; by default that is an error too.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, not {fmt!r}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError) and missing is not _REFUSE:
            return missing
        raise _unreadable(path, exc, input_name, fix) from None
    try:
        content = json.loads(text) if fmt == "JSON" else yaml.load(text, Loader=_PortLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise _bad(input_name, path, f"is not valid {fmt} ({_parser_words(exc)})", fix) from None
    except _AliasRefused as exc:
        problem = f"uses a YAML alias (*name, line {exc.args[0]}), which port files never need"
        raise _bad(input_name, path, problem, fix) from None
    except RecursionError:  # both parsers recurse once per level: a few KB of brackets exhaust the stack
        raise _bad(input_name, path, "is nested too deeply to be a port file (hundreds of levels)", fix) from None
    if kind is not None and not isinstance(content, kind):
        raise _bad(input_name, path, f"is not a {_SHAPES[kind][fmt]} ({_found(content)})", fix)
    return content


def read_port_lines(path: str | Path, *, input_name: str, fix: str) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line of a JSON Lines file, read as it is iterated."""
    path = Path(path)
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise _unreadable(path, exc, input_name, fix) from None
    with f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _bad(input_name, path, f"line {number} is not valid JSON ({exc.msg})", fix) from None
                if not isinstance(row, dict):
                    raise _bad(input_name, path, f"line {number} is not a JSON object ({_found(row)})", fix)
                yield number, row
        except UnicodeDecodeError as exc:
            raise _unreadable(path, exc, input_name, fix) from None


def _unreadable(path: Path, exc: OSError | UnicodeDecodeError, input_name: str, fix: str) -> UserError:
    if isinstance(exc, FileNotFoundError):
        problem = "does not exist"
    elif isinstance(exc, IsADirectoryError):
        problem = "is a folder"
    elif isinstance(exc, UnicodeDecodeError):
        problem = "cannot be read (it is not UTF-8 text)"
    else:
        problem = f"cannot be read ({exc.strerror or exc.__class__.__name__})"
    return _bad(input_name, path, problem, fix)


def _bad(input_name: str, path: Path, problem: str, fix: str) -> UserError:
    return UserError(f"{input_name}: {path} {problem}; {fix}")


def _parser_words(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg}, line {exc.lineno}"
    return str(exc).splitlines()[0]  # a YAML error's first line; the rest quotes the file


def _found(content) -> str:
    return "it is empty" if content is None else f"it holds a {type(content).__name__}"
