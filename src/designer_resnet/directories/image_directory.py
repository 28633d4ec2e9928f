"""ImageDirectory: read what the designer's modules write, write what they read.

Layout (docs/formats.md): `_meta.yaml`, `images.lst` (JSON Lines, one row per
image), `_schema.json` (column attributes), optional `_samples.json`, and the
image files. A folder without `_meta.yaml` is read as a torchvision
ImageFolder (`root/<class>/<file>`), else as every image below it, unlabelled;
hidden folders (a name starting with '.') are skipped. Only the row list is
held in memory; images are opened one at a time.

Nothing in a folder with `_meta.yaml` may lead a reader outside it: the files
the meta and the rows name, links followed, must lie inside. A plain folder is
the user's own layout, so links there are followed wherever they point.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from ..errors import UserError
from .files import read_port_file, read_port_lines
from .meta import META_FILE, is_inside, meta_file, read_meta, safe_relative_path, write_meta
from .staging import STAGING_PREFIX

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
IMAGE_LIST = "images.lst"
SCHEMA_FILE = "_schema.json"
SAMPLES_FILE = "_samples.json"
IMAGE_FOLDER = "image"
IMAGE_REF = "image_info"
LABEL_COLUMN = "category"
# Operating-system droppings that are neither images nor worth a warning.
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints"})
_SAMPLE_ROWS = 3
_SAMPLE_EDGE = 128
_REBUILD = "rebuild the folder with Convert to Image Directory"
# What reading a listed image may raise for a bad file: decoder errors, and Pillow's decompression-bomb guard (its
# warning, over Image.MAX_IMAGE_PIXELS, raised as an error here; its error at twice that).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)
# Warning filters are the process's, not the thread's: threads that turn the bomb warning into an error take turns.
_BOMB_FILTER = threading.Lock()


class UnreadableImage(UserError):
    """A listed image its reader refuses (undecodable, or over Pillow's pixel limit).

    The message names the input, the file, its row id and the fix (what Train
    stops with); `reason` is the short cause Score and Apply report beside the
    id of a row they skip.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def open_guarded(path: Path) -> Image.Image:
    """Image.open (header only), with Pillow's DecompressionBombWarning raised as an error (thread-safe)."""
    with _BOMB_FILTER, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def is_image_name(name: str) -> bool:
    """True when the file name has one of the image suffixes (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_junk(name: str) -> bool:
    """True for OS metadata files and folders that scans skip silently."""
    return name in JUNK_NAMES or name.startswith("._")


@dataclass
class ImageDirectory:
    """An ImageDirectory on disk: its rows, and which keys hold image and label."""

    root: Path
    rows: list[dict]
    categories: list[str] | None = None
    image_ref: str = IMAGE_REF
    label_column: str | None = None
    extension: dict = field(default_factory=dict)
    input_name: str = "input"
    schema: dict | None = None  # the `_schema.json` as read, kept so subsets copy it verbatim
    # True for a folder with `_meta.yaml`: files its rows name must stay inside it, links followed.
    confined: bool = False
    _inside_dirs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | Path, *, input_name: str = "input") -> "ImageDirectory":
        """Read an ImageDirectory, or a plain folder of images (ImageFolder or flat)."""
        root = Path(path)
        if not root.is_dir():
            raise UserError(f"{input_name}: {root} is not a folder; connect an ImageDirectory")
        if not (root / META_FILE).exists():
            entries = list(root.iterdir())
            only_leftovers = entries and all(p.name.startswith(".") for p in entries) and any(
                p.name.startswith(STAGING_PREFIX) for p in entries)
            if (root / IMAGE_LIST).exists() or only_leftovers:
                # A step that failed or was killed: `_meta.yaml` is published last, so it is not done.
                raise UserError(f"{input_name}: {root} is an unfinished output (it has no {META_FILE}: the step that "
                                "writes it failed or was stopped); run that step again")
            scan = scan_image_folder(root)
            if not scan.rows:
                raise UserError(f"{input_name}: no image files found in {root}; supported types are {_suffix_list()}")
            return cls(root, scan.rows, scan.categories, label_column=LABEL_COLUMN if scan.categories else None,
                       input_name=input_name)
        meta = read_meta(root, "ImageDirectory", input_name=input_name)
        schema = read_port_file(meta_file(root, meta, "schema", SCHEMA_FILE, input_name=input_name), "JSON",
                                input_name=input_name, fix=_REBUILD)
        image_ref, label_column, categories = _parse_schema(schema, input_name)
        list_path = meta_file(root, meta, "image_list", IMAGE_LIST, input_name=input_name)
        rows = _checked_rows(read_port_lines(list_path, input_name=input_name, fix=_REBUILD), list_path.name,
                             image_ref, label_column, input_name)
        if not rows:
            raise UserError(f"{input_name}: {root} lists no images; connect a non-empty ImageDirectory")
        if label_column is not None:
            if not categories:
                categories = sorted({str(r[label_column]) for r in rows if r.get(label_column) is not None})
            unknown = {str(r.get(label_column)) for r in rows} - set(categories)
            if unknown:
                raise UserError(
                    f"{input_name}: rows carry labels missing from the schema's categories: "
                    f"{', '.join(sorted(unknown)[:5])}; rebuild it with Convert to Image Directory"
                )
        extension = meta.get("extension") or {}
        return cls(root, rows, categories, image_ref, label_column,
                   extension if isinstance(extension, dict) else {}, input_name, schema, confined=True)

    @property
    def labelled(self) -> bool:
        return self.label_column is not None

    def __len__(self) -> int:
        return len(self.rows)

    def relative_path(self, row: dict) -> str:
        info = row.get(self.image_ref)
        name = info.get("file_name") if isinstance(info, dict) else None
        if not isinstance(name, str) or not name:
            raise UserError(f"{self.input_name}: row id {row.get('id')} has no {self.image_ref}.file_name; "
                            "rebuild the folder with Convert to Image Directory")
        return name

    def image_path(self, row: dict) -> Path:
        """The row's image file; refuses a path that would leave the folder (or, with `_meta.yaml`, a link out of it)."""
        name = self.relative_path(row)
        what = f"{self.input_name}: row id {row.get('id')}"
        rel = safe_relative_path(name, what=what)
        path = self.root / rel
        if self.confined:
            # One check per folder (cached) and one lstat per file keeps this cheap for a million rows.
            parent = rel.parent
            ok = self._inside_dirs.get(parent)
            if ok is None:
                ok = self._inside_dirs[parent] = is_inside(self.root, self.root / parent)
            if not ok or (path.is_symlink() and not is_inside(self.root, path)):
                raise UserError(f"{what}: {name} links outside {self.root}; "
                                "copy the file into the folder instead of linking it")
        return path

    def label(self, row: dict) -> str | None:
        if self.label_column is None:
            return None
        return str(row[self.label_column])

    def row_name(self, row: dict) -> str:
        """How an error names a row: `<input>: <file> (row id <id>)`."""
        return f"{self.input_name}: {self.relative_path(row)} (row id {row.get('id')})"

    def open_image(self, row: dict) -> Image.Image:
        """Decode one row's image as RGB: the one reader of listed images (Train, Apply, Score).

        A file Pillow cannot decode, or one over its pixel limit, raises UnreadableImage.
        """
        return self.open_image_and_format(row)[0]

    def open_image_and_format(self, row: dict) -> tuple[Image.Image, str | None]:
        """open_image, and the file's format as Pillow names it ('JPEG', 'MPO', 'PNG', ...), read from its bytes."""
        path = self.image_path(row)
        try:
            with open_guarded(path) as img:
                img.load()  # decoded here, inside the guard; an RGB image needs no converted copy
                return (img if img.mode == "RGB" else img.convert("RGB")), img.format
        except DECODE_ERRORS as exc:
            raise self.unreadable(row, exc) from None

    def image_size(self, row: dict) -> tuple[int, int]:
        """(width, height) of one row's image from its header (no decode); UnreadableImage as open_image."""
        path = self.image_path(row)
        try:
            with open_guarded(path) as img:
                return img.size
        except DECODE_ERRORS as exc:
            raise self.unreadable(row, exc) from None

    def read_encoded(self, row: dict) -> tuple[Image.Image, bytes]:
        """(header, file bytes) of one row's image, undecoded: for decoding elsewhere; UnreadableImage as open_image.

        The header image is closed: its size, format and mode are there, its pixels are not.
        """
        path = self.image_path(row)
        try:
            with open_guarded(path) as img:
                img.fp.seek(0)
                return img, img.fp.read()
        except DECODE_ERRORS as exc:
            raise self.unreadable(row, exc) from None

    def unreadable(self, row: dict, exc: Exception) -> UnreadableImage:
        """The refusal for a row whose file failed to decode (here, or elsewhere such as on a GPU)."""
        cause = exc.__class__.__name__
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            cause += f": over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
        return UnreadableImage(f"{self.row_name(row)} cannot be read ({cause}); remove it, or rebuild the set with "
                               "Convert to Image Directory, which skips unreadable files",
                               f"{exc.__class__.__name__}: {exc}")

    def non_image_columns(self) -> list[str]:
        """The schema's columns other than the image, in schema order (`id`, then `category` if labelled)."""
        if self.schema is not None:
            names = [c.get("name") for c in self.schema.get("columnAttributes", [])
                     if isinstance(c, dict) and not _is_image_column(c)]
            if "id" in names:
                return [n for n in names if isinstance(n, str)]
        return ["id", self.label_column] if self.label_column else ["id"]


@dataclass
class FolderScan:
    rows: list[dict]
    categories: list[str] | None
    ignored: list[Path]


def scan_image_folder(root: Path) -> FolderScan:
    """Rows for a folder with no `_meta.yaml`.

    ImageFolder layout (only class sub-folders at the top, images inside them)
    gives labelled rows with sorted categories; anything else gives every
    image below `root`, unlabelled. `ignored` lists non-image files.
    """
    top = sorted(p for p in root.iterdir() if not is_junk(p.name))
    # Hidden folders (a killed run's staging folder, caches) are never classes nor images.
    class_dirs = [p for p in top if p.is_dir() and not p.name.startswith(".")]
    top_files = [p for p in top if not p.is_dir()]
    labelled = bool(class_dirs) and not any(is_image_name(p.name) for p in top_files)
    rows: list[dict] = []
    ignored: list[Path] = []
    categories: list[str] | None = None
    if labelled:
        found: list[str] = []
        for class_dir in class_dirs:
            before = len(rows)
            for file in _walk_files(class_dir, ignored):
                rows.append(_row(root, file, len(rows), class_dir.name))
            if len(rows) > before:
                found.append(class_dir.name)
        categories = sorted(found)
        ignored.extend(top_files)
    else:
        for file in _walk_files(root, ignored):
            rows.append(_row(root, file, len(rows), None))
    return FolderScan(rows, categories if rows else None, ignored)


def _walk_files(folder: Path, ignored: list[Path]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d) and not d.startswith("."))
        for name in sorted(filenames):
            if is_junk(name):
                continue
            path = Path(dirpath) / name
            if is_image_name(name):
                yield path
            else:
                ignored.append(path)


def _row(root: Path, file: Path, row_id: int, category: str | None) -> dict:
    row = {IMAGE_REF: {"file_name": file.relative_to(root).as_posix()}, "id": row_id}
    if category is not None:
        row[LABEL_COLUMN] = category
    return row


def _suffix_list() -> str:
    return " ".join(sorted(IMAGE_SUFFIXES))


def _checked_rows(numbered: Iterator[tuple[int, dict]], list_name: str, image_ref: str, label_column: str | None,
                  input_name: str) -> list[dict]:
    """The rows, each checked where a reader would otherwise crash or lose images; sizes normalised.

    Refuses a row without a unique integer `id` (files are named by id, so a
    duplicate would overwrite an image), without `<image_ref>.file_name`, or,
    in a labelled set, without a label. `width`/`height` that are not positive
    integers are dropped (readers then take the size from the file).
    """
    rows: list[dict] = []
    line_of_id: dict[int, int] = {}
    for number, row in numbered:
        where = f"{input_name}: {list_name} line {number}"
        row_id = _integer(row.get("id"))
        if row_id is None:
            raise UserError(f"{where} has no integer 'id'; give every row a unique integer id")
        if row_id in line_of_id:
            raise UserError(f"{input_name}: {list_name} lines {line_of_id[row_id]} and {number} share id {row_id}; "
                            "give every row a unique integer id")
        line_of_id[row_id] = number
        row["id"] = row_id
        where = f"{where} (id {row_id})"
        info = row.get(image_ref)
        if not isinstance(info, dict) or not isinstance(info.get("file_name"), str) or not info["file_name"]:
            raise UserError(f"{where} has no {image_ref}.file_name; rebuild the folder with Convert to Image Directory")
        sizes = {k: _integer(info[k], text=True) for k in ("width", "height") if k in info}
        if any(v is None or v <= 0 for v in sizes.values()):
            info.pop("width", None)
            info.pop("height", None)
        else:
            info.update(sizes)
        if label_column is not None:
            label = row.get(label_column)
            if label is None or isinstance(label, (bool, dict, list)) or str(label) == "":
                raise UserError(f"{where} has no '{label_column}'; give every row of a labelled set its class, "
                                "or remove the row")
        rows.append(row)
    return rows


def _integer(value, *, text: bool = False) -> int | None:
    """`value` as an int when it is one (an integral float too, and digits in a string if `text`), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if text and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _is_image_column(col: dict) -> bool:
    props = col.get("properties") or {}
    return (col.get("elementType") or {}).get("typeName") == "bytes" and props.get("mime_type") == "image/png"


def _parse_schema(schema, input_name: str) -> tuple[str, str | None, list[str] | None]:
    """Find the image column's row key, the label column and its categories."""
    columns = schema.get("columnAttributes") if isinstance(schema, dict) else None
    if not isinstance(columns, list):
        raise UserError(f"{input_name}: {SCHEMA_FILE} has no columnAttributes list; rebuild the folder with Convert to Image Directory")
    image_ref, label_column, categories = IMAGE_REF, None, None
    for col in columns:
        if not isinstance(col, dict):
            continue
        props = col.get("properties") or {}
        if _is_image_column(col):
            image_ref = props.get("image_ref", IMAGE_REF)
        elif "annotation_type" in props:
            label_column = col.get("name")
            cats = props.get("categories")
            if isinstance(cats, list) and cats:
                ordered = sorted(cats, key=lambda c: c.get("id", 0) if isinstance(c, dict) else 0)
                categories = [str(c["name"]) if isinstance(c, dict) else str(c) for c in ordered]
    return image_ref, label_column, categories


def image_schema(categories: list[str] | None) -> dict:
    """The `_schema.json` content for a labelled (categories given) or unlabelled set."""
    columns = [
        {"name": "image", "type": "Bytes", "isFeature": True,
         "elementType": {"typeName": "bytes", "isNullable": False},
         "properties": {"mime_type": "image/png", "image_ref": IMAGE_REF}},
        {"name": "id", "type": "Numeric", "isFeature": False,
         "elementType": {"typeName": "int64", "isNullable": False}},
    ]
    if categories is not None:
        columns.append(
            {"name": LABEL_COLUMN, "type": "String", "isFeature": False,
             "elementType": {"typeName": "str", "isNullable": False},
             "properties": {"annotation_type": "COCO_classification",
                            "categories": [{"id": i, "name": n} for i, n in enumerate(categories)]}})
    return {"columnAttributes": columns}


class ImageDirectoryWriter:
    """Streams rows into a new ImageDirectory; `close()` writes schema, samples and meta.

    Image files are placed by the caller (see `target_name`) so they can be
    copied in parallel; rows must be added in the order they should appear.
    """

    def __init__(self, root: str | Path, categories: list[str] | None, *, extension: dict | None = None,
                 schema: dict | None = None, image_ref: str = IMAGE_REF):
        self.root = Path(root)
        self.categories = categories
        self.extension = extension or {}
        self.schema = schema or image_schema(categories)
        self.image_ref = image_ref
        (self.root / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
        self._list = open(self.root / IMAGE_LIST, "w", encoding="utf-8")
        self._samples: list[dict] = []
        self.count = 0

    def target_name(self, row_id: int, category: str | None, suffix: str) -> str:
        """The designer's file name: `image/<category index>_<row id><suffix>`."""
        index = self.categories.index(category) if (self.categories is not None and category is not None) else 0
        return f"{IMAGE_FOLDER}/{index}_{row_id}{suffix.lower()}"

    def add(self, file_name: str, row_id: int, category: str | None = None, **image_info) -> None:
        """Append a row for an image already written at `root/file_name`."""
        row: dict = {IMAGE_REF: {"file_name": file_name, **image_info}, "id": int(row_id)}
        if self.categories is not None:
            if category is None:
                raise ValueError("labelled ImageDirectory rows need a category")
            row[LABEL_COLUMN] = category
        self.add_row(row)

    def add_row(self, row: dict) -> None:
        """Append a row as given (extra keys kept); its image must already be in place."""
        self._list.write(json.dumps(row) + "\n")
        if len(self._samples) < _SAMPLE_ROWS:
            try:
                self._samples.append(_sample(self.root / row[self.image_ref]["file_name"], row, self.image_ref))
            except (OSError, SyntaxError, ValueError):
                pass  # the preview shows the next readable image; whether this one is usable is its reader's call
        self.count += 1

    def close(self) -> None:
        self._list.close()
        if self.count == 0:
            raise UserError("no valid image was written; check the input holds readable images")
        with open(self.root / SCHEMA_FILE, "w", encoding="utf-8") as f:
            json.dump(self.schema, f, indent=1)
        with open(self.root / SAMPLES_FILE, "w", encoding="utf-8") as f:
            json.dump(self._samples, f)
        write_meta(self.root, {"type": "ImageDirectory", "image_list": IMAGE_LIST, "schema": SCHEMA_FILE,
                               "samples": SAMPLES_FILE, "extension": self.extension})

    def __enter__(self) -> "ImageDirectoryWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._list.close()


def _sample(path: Path, row: dict, image_ref: str) -> dict:
    """A UI preview row: the image as a small base64 PNG plus the other columns."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((_SAMPLE_EDGE, _SAMPLE_EDGE))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    sample = {"image": base64.b64encode(buf.getvalue()).decode("ascii")}
    sample.update({k: v for k, v in row.items() if k != image_ref})
    return sample
