"""DataFrameDirectory: a Parquet table with `_meta.yaml` and a column schema.

The schema is the designer's: the built-in modules (Evaluate Model first of all)
load it before the data and fail on a missing key, so all four keys are always
written, and each column's attribute must describe the stored column exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .files import read_port_file
from .meta import meta_file, read_meta, write_meta

DATA_FILE = "_data.parquet"
SCHEMA_FILE = "schema/_schema.json"
# The designer's role names: `labelColumns` maps TRUE_LABELS to the label column;
# `scoreColumns` maps ASSIGNED_LABELS to the predicted-label column (this key is what
# selects the built-in Evaluate Model's multi-class evaluator) and each probability
# column to itself.
TRUE_LABELS = "True Labels"
ASSIGNED_LABELS = "Multi Class Assigned Labels"
# The columns Score Image Model writes (and the built-in Score Image Model too): the predicted
# label, and one probability column per class.
SCORED_LABELS = "Scored Labels"
PROBABILITY_PREFIX = "Scored Probabilities_"


def _column_attribute(name: str, column: pd.Series, is_feature: bool) -> dict:
    # The designer's column and element type names; the built-in modules refuse a
    # typeName that differs from the stored data, so it follows the dtype written.
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        kind, type_name = "Binary", "bool"
    elif pd.api.types.is_integer_dtype(dtype):
        kind, type_name = "Numeric", "int64"
    elif pd.api.types.is_float_dtype(dtype):
        kind, type_name = "Numeric", "float64"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        kind, type_name = "DateTime", "datetime64"
    elif pd.api.types.is_timedelta64_dtype(dtype):
        kind, type_name = "TimeSpan", "timedelta64"
    else:
        kind, type_name = "String", "str"
    return {"name": str(name), "type": kind, "isFeature": is_feature,
            "elementType": {"typeName": type_name, "isNullable": bool(column.isna().any())}}


def write_dataframe_directory(path: str | Path, df: pd.DataFrame, *, label_column: str | None = None,
                              score_columns: dict[str, str] | None = None, extension: dict | None = None) -> None:
    """Write `df` as a DataFrameDirectory into the (existing) folder `path`.

    `label_column` names the true-label column and `score_columns` maps designer
    score roles (ASSIGNED_LABELS, `Scored Probabilities_<class>`) to columns; both
    go into the schema, and those columns are declared as non-features.
    """
    path = Path(path)
    score_columns = dict(score_columns or {})
    roles = ([label_column] if label_column is not None else []) + list(score_columns.values())
    missing = [c for c in roles if c not in df.columns]
    if missing:  # the caller's bug, not the user's: the schema would name absent columns
        raise ValueError(f"schema names columns the table lacks: {missing}")
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / DATA_FILE, index=False)
    schema = {
        "columnAttributes": [_column_attribute(c, df[c], c not in roles) for c in df.columns],
        "featureChannels": [],
        "labelColumns": {TRUE_LABELS: label_column} if label_column is not None else {},
        "scoreColumns": score_columns,
    }
    (path / SCHEMA_FILE).parent.mkdir(parents=True, exist_ok=True)
    with open(path / SCHEMA_FILE, "w", encoding="utf-8") as f:
        json.dump(schema, f, indent=1)
    meta = {"type": "DataFrameDirectory", "format": "Parquet", "data": DATA_FILE, "schema": SCHEMA_FILE}
    if extension:
        meta["extension"] = extension
    write_meta(path, meta)


def read_dataframe_directory(path: str | Path, *, input_name: str = "input") -> pd.DataFrame:
    """Read a DataFrameDirectory's table (Parquet, or CSV if the meta says so)."""
    path = Path(path)
    meta = read_meta(path, "DataFrameDirectory", input_name=input_name)
    data = meta_file(path, meta, "data", DATA_FILE, input_name=input_name)
    fmt = str(meta.get("format", "Parquet")).lower()
    try:
        if fmt == "csv":
            return pd.read_csv(data)
        return pd.read_parquet(data)
    except FileNotFoundError:
        raise UserError(f"{input_name}: {data.name} is missing from {path}; rerun the module that wrote it") from None
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise UserError(f"{input_name}: cannot read {data} as {fmt} ({exc.__class__.__name__}); rerun the module that wrote it") from None


def read_dataframe_schema(path: str | Path, *, input_name: str = "input") -> dict:
    """The folder's `_schema.json` with all four keys (empty where the file or a key is absent).

    Older folders of ours and some other modules' carry no schema or only
    `columnAttributes`; they read as having no label or score roles.
    """
    path = Path(path)
    meta = read_meta(path, "DataFrameDirectory", input_name=input_name)
    schema_path = meta_file(path, meta, "schema", SCHEMA_FILE, input_name=input_name)
    schema = read_port_file(schema_path, "JSON", input_name=input_name, fix="rerun the module that wrote it",
                            missing={})
    empty = {"columnAttributes": [], "featureChannels": [], "labelColumns": {}, "scoreColumns": {}}
    for key, value in empty.items():
        if not isinstance(schema.get(key), type(value)):
            schema[key] = value
    return schema
