"""DataFrameDirectory: a Parquet table with `_meta.yaml` and a column schema."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .meta import read_meta, write_meta

DATA_FILE = "_data.parquet"
SCHEMA_FILE = "schema/_schema.json"


def _column_attribute(name: str, dtype) -> dict:
    if pd.api.types.is_bool_dtype(dtype):
        kind, type_name = "Boolean", "bool"
    elif pd.api.types.is_integer_dtype(dtype):
        kind, type_name = "Numeric", "int64"
    elif pd.api.types.is_float_dtype(dtype):
        kind, type_name = "Numeric", "float64"
    else:
        kind, type_name = "String", "str"
    return {"name": str(name), "type": kind, "isFeature": True,
            "elementType": {"typeName": type_name, "isNullable": True}}


def write_dataframe_directory(path: str | Path, df: pd.DataFrame, *, extension: dict | None = None) -> None:
    """Write `df` as a DataFrameDirectory into the (existing) folder `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / DATA_FILE, index=False)
    (path / SCHEMA_FILE).parent.mkdir(parents=True, exist_ok=True)
    with open(path / SCHEMA_FILE, "w", encoding="utf-8") as f:
        json.dump({"columnAttributes": [_column_attribute(c, df[c].dtype) for c in df.columns]}, f, indent=1)
    meta = {"type": "DataFrameDirectory", "format": "Parquet", "data": DATA_FILE, "schema": SCHEMA_FILE}
    if extension:
        meta["extension"] = extension
    write_meta(path, meta)


def read_dataframe_directory(path: str | Path, *, input_name: str = "input") -> pd.DataFrame:
    """Read a DataFrameDirectory's table (Parquet, or CSV if the meta says so)."""
    path = Path(path)
    meta = read_meta(path, "DataFrameDirectory", input_name=input_name)
    data = path / str(meta.get("data", DATA_FILE))
    fmt = str(meta.get("format", "Parquet")).lower()
    try:
        if fmt == "csv":
            return pd.read_csv(data)
        return pd.read_parquet(data)
    except FileNotFoundError:
        raise UserError(f"{input_name}: {data.name} is missing from {path}; rerun the module that wrote it") from None
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise UserError(f"{input_name}: cannot read {data} as {fmt} ({exc.__class__.__name__}); rerun the module that wrote it") from None
