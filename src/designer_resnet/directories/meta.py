"""The `_meta.yaml` file that names a port folder's type."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import UserError
from .files import read_port_file, write_port_yaml

META_FILE = "_meta.yaml"
# Our fields in a `_meta.yaml` `extension` (and a model_spec.yaml) live under this key; the built-ins ignore it.
EXTENSION_KEY = "designer_resnet"

# UntrainedModelDirectory folders say `type: ModelDirectory` on disk (docs/formats.md);
# the port type shown in the designer is carried by the connection, not the file.
_DISK_TYPE = {"UntrainedModelDirectory": "ModelDirectory"}


def disk_type(port_type: str) -> str:
    """The `type` value a folder of this port type carries in `_meta.yaml`."""
    return _DISK_TYPE.get(port_type, port_type)


def read_meta(path: str | Path, expected: str | Iterable[str] | None = None, *, input_name: str = "input") -> dict:
    """Read `<path>/_meta.yaml`; check its `type` is one of `expected` port types.

    Raises UserError naming `input_name`, the type found and the type wanted.
    """
    path = Path(path)
    meta_path = path / META_FILE
    if meta_path.is_symlink() and not is_inside(path, meta_path):
        raise UserError(f"{input_name}: {META_FILE} links outside {path}; copy the file into the folder instead of linking it")
    meta = read_port_file(meta_path, "YAML", input_name=input_name, fix="connect the output of a designer module here")
    if not isinstance(meta.get("type"), str):
        raise UserError(f"{input_name}: {meta_path} has no 'type' field; recreate it with the module that wrote it")
    if expected is not None:
        wanted = [expected] if isinstance(expected, str) else list(expected)
        if meta["type"] not in {disk_type(t) for t in wanted}:
            raise UserError(
                f"{input_name}: expected {' or '.join(wanted)} but {path} is a {meta['type']}; "
                f"connect the output of a module that produces {' or '.join(wanted)}"
            )
    return meta


def write_meta(path: str | Path, meta: dict) -> None:
    """Write `<path>/_meta.yaml` (the `type` key first, as the designer does)."""
    ordered = {"type": meta["type"], **{k: v for k, v in meta.items() if k != "type"}}
    with open(Path(path) / META_FILE, "w", encoding="utf-8") as f:
        write_port_yaml(ordered, f)


def safe_relative_path(name: str, *, what: str) -> PurePosixPath:
    """Check a relative path stays inside its folder; return it normalised."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and ":" in posix.parts[0]) or ".." in posix.parts or not posix.parts:
        raise UserError(f"{what}: path {name!r} leaves its folder; only relative paths inside it are allowed")
    return posix


def is_inside(root: str | Path, path: str | Path) -> bool:
    """True when `path`, with every link followed, is `root` or lies below it (also with links followed)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def inside_path(root: str | Path, name: str, *, what: str) -> Path:
    """`root/name` for a relative `name` that stays in `root`, also once links are followed; else UserError."""
    path = Path(root) / safe_relative_path(name, what=what)
    if not is_inside(root, path):
        raise UserError(f"{what}: {name} links outside {root}; copy the file into the folder instead of linking it")
    return path


def meta_file(root: str | Path, meta: dict, key: str, default: str, *, input_name: str) -> Path:
    """The file a `_meta.yaml` field names (`default` when absent), refused if it leaves the folder."""
    value = meta.get(key)
    if value is None:
        value = default
    what = f"{input_name}: {META_FILE} {key}"
    if not isinstance(value, str) or not value:
        raise UserError(f"{what}: {str(value)[:60]!r} is not a file name; recreate the folder with the module that wrote it")
    return inside_path(root, value, what=what)
