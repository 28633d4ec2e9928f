"""The `_meta.yaml` file that names a port folder's type."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

from ..errors import UserError

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
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"{input_name}: {path} has no {META_FILE}; connect a designer port folder here") from None
    except yaml.YAMLError as exc:
        line = str(exc).splitlines()[0]
        raise UserError(f"{input_name}: {meta_path} is not valid YAML ({line}); recreate it with the module that wrote it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("type"), str):
        raise UserError(f"{input_name}: {meta_path} has no 'type' field; recreate it with the module that wrote it")
    if expected is not None:
        wanted = [expected] if isinstance(expected, str) else list(expected)
        if meta["type"] not in {disk_type(t) for t in wanted}:
            raise UserError(
                f"{input_name}: expected {' or '.join(wanted)} but {path} is a {meta['type']}; "
                f"connect the output of a module that produces {wanted[0]}"
            )
    return meta


def write_meta(path: str | Path, meta: dict) -> None:
    """Write `<path>/_meta.yaml` (the `type` key first, as the designer does)."""
    ordered = {"type": meta["type"], **{k: v for k, v in meta.items() if k != "type"}}
    with open(Path(path) / META_FILE, "w", encoding="utf-8") as f:
        yaml.safe_dump(ordered, f, sort_keys=False, default_flow_style=False)
