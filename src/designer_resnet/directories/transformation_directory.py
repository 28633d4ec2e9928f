"""TransformationDirectory: an ordered list of torchvision transform ops as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .files import read_port_file
from .meta import read_meta, write_meta

TRANSFORMS_FILE = "_transforms.json"


def write_transformation_directory(path: str | Path, ops: list) -> None:
    """Write `ops` (`[[name, args], ...]`) as a TransformationDirectory into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / TRANSFORMS_FILE, "w", encoding="utf-8") as f:
        json.dump(ops, f, indent=1)
    write_meta(path, {"type": "TransformationDirectory", "transform_type": "Image"})


def read_transformation_directory(path: str | Path, *, input_name: str = "input"):
    """The ops of a TransformationDirectory as written, not yet validated (transforms.apply.read_transformation is)."""
    path = Path(path)
    meta = read_meta(path, "TransformationDirectory", input_name=input_name)
    if str(meta.get("transform_type", "Image")) != "Image":
        raise UserError(f"{input_name}: transform_type {meta.get('transform_type')!r} is not Image; "
                        "connect the output of Init Image Transformation")
    return read_port_file(path / TRANSFORMS_FILE, "JSON", input_name=input_name, kind=list,
                          fix="rerun Init Image Transformation")
