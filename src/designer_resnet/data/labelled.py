"""Labelled images as Azure ML Data Labeling exports them and AutoML for Images reads them.

The input is a JSON Lines file, one image per line, in AutoML's image-classification
format (docs/formats.md, "Labelled data: JSON Lines and MLTable"):

    {"image_url": "images/cat1.jpg", "label": "cat",
     "image_details": {"format": "jpg", "width": "400px", "height": "258px"}}

given as the file itself, as a folder holding it, or as an `mltable` folder whose
`MLTable` file names it. `image_url` is a path relative to the JSON Lines file's
folder, an absolute local path, or an `azureml://.../datastores/<name>/paths/<path>`
URL, read from the datastore folder given as `datastore_path`.

The `MLTable` file is read here with the port-file reader, not with Microsoft's
`mltable` package: that package runs on `azureml-dataprep`, a native (Rust)
engine of about 30 MB whose pins (cloudpickle < 3, azure-identity <= 1.17)
conflict with environments/requirements.txt, and only `paths` and one
`read_json_lines` transformation matter for a list of images.

`read_labelled_set` checks every row before anything is copied: each failure is
one UserError line naming the file, the line and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..directories.files import read_port_file, read_port_lines
from ..directories.image_directory import LABEL_COLUMN, is_image_name, is_junk
from ..directories.meta import META_FILE, is_inside, safe_relative_path
from ..errors import UserError

log = logging.getLogger(__name__)

INPUT = "input_path"
DATASTORE = "datastore_path"
MLTABLE_FILE = "MLTable"
JSONL_SUFFIX = ".jsonl"
# azureml://[subscriptions/<id>/resourcegroups/<rg>/[providers/Microsoft.MachineLearningServices/]workspaces/<ws>/]
#   datastores/<name>/paths/<path>
_DATASTORE_URL = re.compile(
    r"azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/(?:providers/microsoft\.machinelearningservices/)?"
    r"workspaces/[^/]+/)?datastores/(?P<name>[^/]+)/paths/(?P<path>.+)", re.IGNORECASE)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: `C:` is a drive, not a scheme
_SIZE = re.compile(r"\s*(\d+)\s*(?:px)?\s*", re.IGNORECASE)
_MLTABLE_FIX = "give an MLTable whose paths name one JSON Lines file (paths: [{file: ./annotations.jsonl}])"
# Transformations that leave the rows as they are; any other would change which rows a consumer reads.
_KEPT_TRANSFORMATIONS = {"read_json_lines", "convert_column_types"}
_OTHER_READERS = {"read_delimited", "read_parquet", "read_delta_lake"}
_FIRST_LINE_BYTES = 1 << 20
_MAX_WRAPPING = 16
_PATH, _NAME, _DECLARED = "_path", "_name", "_declared"  # keys of a row held here, never written out


@dataclass
class LabelledSet:
    """The rows of a JSON Lines file, checked and resolved; read by Convert as it reads an ImageDirectory.

    A row is `{"id", "category", _PATH: the image file, _NAME: how a report names it, _DECLARED: (w, h) | None}`.
    Rows whose file is not an image type are in `ignored` instead, as a folder's non-image files are.
    """

    jsonl: Path
    rows: list[dict]
    categories: list[str]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    extension: dict = field(default_factory=dict)
    labelled: bool = True

    def image_path(self, row: dict) -> Path:
        return row[_PATH]

    def label(self, row: dict) -> str:
        return row[LABEL_COLUMN]

    def relative_path(self, row: dict) -> str:
        return row[_NAME]

    def check_size(self, row: dict, size: tuple[int, int]) -> None:
        """Note a row whose `image_details` size is not its file's (the file's size is the one written)."""
        declared = row[_DECLARED]
        if declared is not None and declared != size:
            self.mismatched.append(f"{row[_NAME]}: {declared[0]}x{declared[1]} listed, {size[0]}x{size[1]} read")

    def warn_sizes(self) -> None:
        if self.mismatched:
            log.warning("%s: %d row(s) give an image_details width/height other than the file's (%s%s); the files' "
                        "own sizes were written", self.jsonl.name, len(self.mismatched), "; ".join(self.mismatched[:3]),
                        "; ..." if len(self.mismatched) > 3 else "")


def datastore_folder(datastore_path: str | Path | None) -> Path | None:
    """The mounted datastore folder `azureml://` URLs resolve in, checked; None when not given."""
    if datastore_path is None or str(datastore_path) == "":
        return None
    folder = Path(datastore_path)
    if not folder.is_dir():
        raise UserError(f"{DATASTORE}: {folder} is not a folder; connect the datastore (or the folder of it that the "
                        "JSON Lines file's azureml:// URLs name) as a folder")
    return folder


def find_labelled_input(source: Path) -> Path | None:
    """The MLTable or JSON Lines file `source` is or holds; None when `source` is images or an archive.

    A folder is labelled input when it holds an `MLTable` file, or (having no `_meta.yaml`) a `.jsonl` file at its
    top that claims it: any such file except one whose first row is a JSON object without `image_url` (another
    tool's metadata beside a folder of images, which is then read as before). Single wrapping folders are looked
    through, as Convert looks through them for images.
    """
    if source.is_file():
        if source.name == MLTABLE_FILE or source.suffix.lower() == JSONL_SUFFIX:
            return source
        return None
    for _ in range(_MAX_WRAPPING):  # bounded: a link to a folder above would wrap forever
        entries = [p for p in source.iterdir() if not is_junk(p.name) and not (p.name.startswith(".") and p.is_dir())]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        source = entries[0]
    if (source / MLTABLE_FILE).is_file():
        return source / MLTABLE_FILE
    if (source / META_FILE).exists():
        return None
    candidates = sorted(p for p in source.iterdir()
                        if p.suffix.lower() == JSONL_SUFFIX and not is_junk(p.name) and p.is_file())
    claiming = [p for p in candidates if _claims(p)]
    if len(claiming) > 1:
        names = ", ".join(p.name for p in claiming[:4]) + (", ..." if len(claiming) > 4 else "")
        raise UserError(f"{INPUT}: {source} holds {len(claiming)} JSON Lines files ({names}); keep one, or add an "
                        f"{MLTABLE_FILE} file naming it")
    return claiming[0] if claiming else None


def _claims(path: Path) -> bool:
    """False only when the file's first non-blank line is a JSON object without `image_url`."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in iter(lambda: f.readline(_FIRST_LINE_BYTES), ""):
                if line.strip():
                    row = json.loads(line)
                    return not isinstance(row, dict) or "image_url" in row
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return True  # not readable as another tool's metadata: read it as ours, whose errors say what is wrong
    return True  # empty: ours, refused as empty


def read_labelled_set(found: Path, datastore: Path | None) -> LabelledSet:
    """Every row of the JSON Lines file `found` is (or, for an MLTable, names), checked and resolved."""
    resolver = _Resolver(datastore)
    jsonl = _jsonl_of_mltable(found, resolver) if found.name == MLTABLE_FILE else found
    base = jsonl.parent
    rows: list[dict] = []
    ignored: list[tuple[str, str]] = []
    fix = "write one JSON object per line, as AutoML for Images reads them"
    for number, entry in _lines(jsonl, fix):
        where = f"{INPUT}: {jsonl} line {number}"
        url = entry.get("image_url")
        if not isinstance(url, str) or not url.strip():
            found_as = "none" if url is None else f"{type(url).__name__} {str(url)[:40]!r}"
            raise UserError(f"{where} has no image_url string (found {found_as}); give each row the image's path or "
                            "azureml:// URL as a string, or remove the row")
        label = _label(entry, where)
        path = resolver.resolve(url, base, where)
        name = f"{url} ({jsonl.name} line {number})"
        if not is_image_name(path.name):
            ignored.append((name, "not an image file type"))
            continue
        rows.append({"id": len(rows), LABEL_COLUMN: label, _PATH: path, _NAME: name,
                     _DECLARED: _declared_size(entry.get("image_details"))})
    if not rows and not ignored:
        raise UserError(f"{INPUT}: {jsonl} holds no rows; give one JSON object per image "
                        '({"image_url": ..., "label": ...}), as AutoML for Images reads them')
    if not rows:
        raise UserError(f"{INPUT}: none of the {len(ignored)} files {jsonl} lists is an image; supported types are "
                        ".jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp")
    return LabelledSet(jsonl, rows, sorted({r[LABEL_COLUMN] for r in rows}), ignored)


def _lines(jsonl: Path, fix: str):
    """read_port_lines, with a line nested too deeply for the JSON parser one line too."""
    number = 0
    try:
        for number, entry in read_port_lines(jsonl, input_name=INPUT, fix=fix):
            yield number, entry
    except RecursionError:
        raise UserError(f"{INPUT}: {jsonl}: the line after line {number} is nested too deeply to be a row; "
                        f"{fix}") from None


def _label(entry: dict, where: str) -> str:
    label = entry.get("label")
    if isinstance(label, list):
        raise UserError(f"{where} has a list label {json.dumps(label)[:60]} (multi-label), which Convert does not "
                        "take yet; give each image one class as a string, or remove the row")
    if label is None or label == "":
        raise UserError(f"{where} has no label; give every row its class as a string (\"label\": \"cat\"), "
                        "or remove the row")
    if not isinstance(label, str):
        raise UserError(f"{where}: label {json.dumps(label)[:40]} is not a string; write the class as a string "
                        "(\"label\": \"3\", not 3), or remove the row")
    return label


def _declared_size(details) -> tuple[int, int] | None:
    """(width, height) from `image_details` ("400px", "400" or 400); None when absent or not both positive."""
    if not isinstance(details, dict):
        return None
    sizes = []
    for key in ("width", "height"):
        value = details.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and (match := _SIZE.fullmatch(value)):
            value = int(match.group(1))
        if not isinstance(value, int) or value <= 0:
            return None
        sizes.append(value)
    return sizes[0], sizes[1]


class _Resolver:
    """Where a path or URL of the input (an image_url, an MLTable's path) lies, refused unless it is safe.

    A relative path lies in the folder of the file naming it; an `azureml://` URL in `datastore`; both must stay
    there once links are followed. An absolute local path is the user's own choice and may lie anywhere, but only
    an existing regular file is taken, and (for images) only a file of an image type is ever opened.
    """

    def __init__(self, datastore: Path | None):
        self.datastore = datastore
        self.datastore_name: str | None = None

    def resolve(self, value: str, base: Path, where: str, *, kind: str = "image_url", folder: bool = False) -> Path:
        text = value.strip()
        shown = f"{kind} {text[:200]!r}"
        if text.lower().startswith("azureml://"):
            path = self._in_datastore(text, where, shown)
        elif _SCHEME.match(text):
            scheme = text.split(":", 1)[0]
            raise UserError(f"{where}: {shown} is a URL Convert cannot read ({scheme}:); give a path relative "
                            f"to the file, an absolute path, or azureml://datastores/<name>/paths/<path> with the "
                            f"datastore connected to {DATASTORE}")
        elif os.path.isabs(text):
            path = Path(text)
        else:
            rel = safe_relative_path(text, what=f"{where}: {kind}")
            path = base / rel
            if not is_inside(base, path):
                raise UserError(f"{where}: {shown} links outside {base}; copy the file into that folder instead of "
                                "linking it")
        return _existing(path, where, shown, folder)

    def _in_datastore(self, url: str, where: str, shown: str) -> Path:
        match = _DATASTORE_URL.fullmatch(url)
        if match is None:
            raise UserError(f"{where}: {shown} is not a datastore URL; write it as "
                            "azureml://datastores/<name>/paths/<path> (or with the subscriptions/.../workspaces/<ws>/ "
                            "prefix)")
        name, rel_text = match.group("name"), match.group("path")
        if self.datastore is None:
            raise UserError(f"{where}: {shown} is in datastore {name!r}, but no {DATASTORE} is given; connect that "
                            f"datastore (mounted as a folder) to {DATASTORE}")
        if self.datastore_name is None:
            self.datastore_name = name
        elif name != self.datastore_name:
            raise UserError(f"{where}: {shown} is in datastore {name!r}, but earlier rows are in "
                            f"{self.datastore_name!r}; {DATASTORE} is one datastore, so list images of one datastore")
        rel = safe_relative_path(rel_text, what=f"{where}: {shown}")
        path = self.datastore / rel
        if not is_inside(self.datastore, path):
            raise UserError(f"{where}: {shown} links outside {DATASTORE} {self.datastore}; copy the file into the "
                            "datastore instead of linking it")
        return path


def _existing(path: Path, where: str, shown: str, folder: bool) -> Path:
    """`path`, when it is a regular file (a folder if `folder`), links followed; else one line saying so."""
    if not path.exists():
        raise UserError(f"{where}: {shown} names {path}, which does not exist; fix the path, or add the file")
    if folder and not path.is_dir():
        raise UserError(f"{where}: {shown} names {path}, which is not a folder; name a folder")
    if not folder and not path.is_file():
        raise UserError(f"{where}: {shown} names {path}, which is not a file; name a file")
    return path


# ---- MLTable -----------------------------------------------------------------------------------------------------


def _jsonl_of_mltable(mltable: Path, resolver: _Resolver) -> Path:
    """The one JSON Lines file an MLTable's `paths` name (relative paths from the MLTable's folder)."""
    spec = read_port_file(mltable, "YAML", input_name=INPUT, fix=_MLTABLE_FIX)
    where = f"{INPUT}: {mltable}"
    reads_json_lines = _check_transformations(spec.get("transformations"), where)
    entries = spec.get("paths")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{where} has no paths list; {_MLTABLE_FIX}")
    files: list[Path] = []
    for number, entry in enumerate(entries, 1):
        files.extend(_mltable_files(entry, mltable.parent, f"{where} paths[{number}]", resolver))
    named = ", ".join(p.name for p in files[:4]) + (", ..." if len(files) > 4 else "")
    if len(files) != 1:
        raise UserError(f"{where}: its paths name {len(files)} files{f' ({named})' if files else ''}; {_MLTABLE_FIX}")
    if not reads_json_lines and files[0].suffix.lower() != JSONL_SUFFIX:
        raise UserError(f"{where}: its paths name {named}, not a JSON Lines (.jsonl) file; {_MLTABLE_FIX}")
    return files[0]


def _check_transformations(transformations, where: str) -> bool:
    """True when the MLTable reads JSON Lines; UserError for another reader or a transformation that drops rows."""
    if transformations is None:
        return False
    if not isinstance(transformations, list):
        raise UserError(f"{where}: transformations is not a list; {_MLTABLE_FIX}")
    reads_json_lines = False
    for step in transformations:
        kind = next(iter(step)) if isinstance(step, dict) and len(step) == 1 else step
        if not isinstance(kind, str):
            raise UserError(f"{where}: transformation {str(step)[:60]!r} is not one name and its options; "
                            f"{_MLTABLE_FIX}")
        if kind in _OTHER_READERS:
            raise UserError(f"{where} reads its files with {kind}, not read_json_lines; Convert takes AutoML's JSON "
                            f"Lines image annotations: {_MLTABLE_FIX}")
        if kind not in _KEPT_TRANSFORMATIONS:
            raise UserError(f"{where}: transformation {kind!r} is not supported (Convert reads every row of the "
                            f"file); remove it")
        if kind == "read_json_lines":
            options = step.get(kind) if isinstance(step, dict) else None
            encoding = (options or {}).get("encoding") if isinstance(options, dict) else None
            if encoding is not None and str(encoding).lower().replace("-", "") != "utf8":
                raise UserError(f"{where}: read_json_lines encoding {encoding!r} is not supported; save the file as "
                                "UTF-8 and set encoding: utf8")
            reads_json_lines = True
    return reads_json_lines


def _mltable_files(entry, base: Path, where: str, resolver: _Resolver) -> list[Path]:
    """The files one `paths` entry (`file:`, `folder:` or `pattern:`) names."""
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ("file", "folder", "pattern") \
            or not isinstance(next(iter(entry.values())), str):
        raise UserError(f"{where} is not one of file: <path>, folder: <path>, pattern: <glob>; {_MLTABLE_FIX}")
    kind, value = next(iter(entry.items()))
    if kind == "file":
        return [resolver.resolve(value, base, where, kind="file")]
    if kind == "folder":
        folder = resolver.resolve(value, base, where, kind="folder", folder=True)
        # its JSON Lines files: the images beside them are what they list
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == JSONL_SUFFIX and p.is_file()
                      and not is_junk(p.name))
    # pattern: a glob below the MLTable's folder, each match kept inside it
    safe_relative_path(value, what=f"{where} pattern")
    matches = sorted(p for p in base.glob(value) if p.is_file())
    for match in matches:
        if not is_inside(base, match):
            raise UserError(f"{where}: pattern {value!r} matches {match}, which links outside {base}; copy the "
                            "file into that folder instead of linking it")
    return matches
