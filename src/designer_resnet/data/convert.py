"""Convert to Image Directory: a folder or archive of images, or labelled JSON Lines / MLTable -> ImageDirectory."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..directories import StagedOutput
from ..directories.image_directory import (
    META_FILE, ImageDirectory, ImageDirectoryWriter, is_image_name, is_junk, open_guarded, scan_image_folder)
from ..errors import UserError
from ..parallel import PROGRESS_MIN, ordered_map
from .archives import DEFAULT_MAX_EXTRACTED_GB, GIB, check_copy_total, extract_archive, find_archive
from .labelled import DATASTORE, LabelledSet, datastore_folder, find_labelled_input, read_labelled_set

log = logging.getLogger(__name__)


@dataclass
class ConvertReport:
    written: int = 0
    labelled: bool = False
    categories: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def find_data_root(path: Path) -> Path:
    """Descend through single wrapping folders (ignoring `__MACOSX` and OS files)."""
    while True:
        entries = [p for p in path.iterdir() if not is_junk(p.name) and not (p.name.startswith(".") and p.is_dir())]
        if len(entries) == 1 and entries[0].is_dir() and not (path / META_FILE).exists():
            path = entries[0]
            if any(is_image_name(p.name) for p in path.iterdir() if p.is_file()):
                log.warning("input_path: the only folder, %r, holds the images; read as unlabelled "
                            "(for a labelled set give one sub-folder per class, at least two)", path.name)
        else:
            return path


def check_image(path: Path) -> tuple[int, int] | str:
    """(width, height) of a fully decodable image, else the reason it is not one."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with open_guarded(path) as img:
            img.load()  # full decode: catches truncated files that verify() misses
            return img.size
    except Image.DecompressionBombWarning:
        return "image too large (decompression bomb guard)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"not a readable image ({exc.__class__.__name__})"


def convert_to_image_directory(input_path: str | Path, output_dir: str | Path, *, workers: int | None = None,
                               max_extracted_gb: float = DEFAULT_MAX_EXTRACTED_GB,
                               datastore_path: str | Path | None = None) -> ConvertReport:
    """Convert `input_path` (folder, archive, folder holding one archive, or labelled data) into `output_dir`.

    An archive may extract to at most `max_extracted_gb` GiB (see `archives` for its other limits), and the
    files its image list names may total no more: a list naming one file many times is no way around them.
    Labelled data is a JSON Lines file in AutoML for Images' format, a folder holding one, or an mltable folder
    (see `labelled`); its `azureml://` image URLs are read from the mounted datastore folder `datastore_path`.
    """
    source = Path(input_path)
    if not source.exists():
        raise UserError(f"input_path: {source} does not exist; give a folder of images or an archive")
    if source.is_dir() and not any(source.iterdir()):
        raise UserError(f"input_path: {source} is empty; give a folder of images or an archive")
    datastore = datastore_folder(datastore_path)
    listing = find_labelled_input(source)
    if listing is not None:
        labelled = read_labelled_set(listing, datastore)  # every row checked before the output is touched
        with StagedOutput(output_dir, output_name="output_path") as stage:
            report = ConvertReport(skipped=list(labelled.ignored))
            _write(labelled, stage.path, workers, report, f"listed in {labelled.jsonl}", on_size=labelled.check_size)
        labelled.warn_sizes()
        return report
    if datastore is not None:
        log.warning("%s: ignored, since input_path is not JSON Lines or an MLTable (only their azureml:// image URLs "
                    "are read from it)", DATASTORE)
    with StagedOutput(output_dir, output_name="output_path") as stage:
        archive = find_archive(source)
        max_bytes = int(max_extracted_gb * GIB)
        check_copies = None
        if archive is not None:
            log.info("extracting %s", archive.name)
            source = stage.scratch()
            extract_archive(archive, source, input_name="input_path", max_bytes=max_bytes)
            check_copies = partial(check_copy_total, archive, input_name="input_path", max_bytes=max_bytes)
        elif source.is_file():
            raise UserError(f"input_path: {source.name} is neither a folder nor a zip/tar/gz/bz2 archive; "
                            "give a folder of images or an archive")
        report = _convert_folder(find_data_root(source), stage.path, workers, check_copies)
    return report


def _convert_folder(root: Path, out: Path, workers: int | None, check_copies=None) -> ConvertReport:
    """Copy the images `root` holds into `out`; `check_copies(total, note=...)`, if given, vets the bytes first."""
    report = ConvertReport()
    if (root / META_FILE).exists():
        source = ImageDirectory.load(root, input_name="input_path")
        ignored: list[Path] = []
    else:
        scan = scan_image_folder(root)
        source = ImageDirectory(root, scan.rows, scan.categories, label_column="category" if scan.categories else None,
                                input_name="input_path")
        ignored = scan.ignored
        _warn_loose_images(root, source)
    report.skipped.extend((str(p.relative_to(root)), "not an image file type") for p in ignored)
    if not source.rows:
        raise UserError(f"input_path: no image files found in {root}; supported types are "
                        ".jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp")
    if check_copies is not None:
        total, repeats = _listed_bytes(source)
        check_copies(total, note=f" (one file {repeats} times)" if repeats > 1 else "")
    return _write(source, out, workers, report, f"in {root}")


def _write(source: ImageDirectory | LabelledSet, out: Path, workers: int | None, report: ConvertReport, where: str,
           on_size=None) -> ConvertReport:
    """Copy every readable image of `source` into a new ImageDirectory `out`, in row order; fill in `report`.

    Unreadable files are skipped and named in `report.skipped`; `on_size(row, (width, height))`, if given, sees
    each written row's size. `where` ends the error for a source with no readable image ("in <folder>").
    """
    # An ImageDirectory given again keeps its ledger: its files are copied as they are.
    writer = ImageDirectoryWriter(out, source.categories, extension=source.extension)

    def copy_one(row: dict):
        src = source.image_path(row)
        checked = check_image(src)
        if isinstance(checked, str):
            return row, None, checked
        name = writer.target_name(row["id"], source.label(row), src.suffix)
        shutil.copyfile(src, out / name)
        return row, name, checked

    per_class: dict[str | None, int] = {}
    bar = tqdm(total=len(source.rows), unit="img", desc="converting", disable=len(source.rows) < PROGRESS_MIN)
    with bar:
        for row, name, result in ordered_map(copy_one, source.rows, workers):
            bar.update()
            if name is None:
                report.skipped.append((source.relative_path(row), result))
                continue
            width, height = result
            if on_size is not None:
                on_size(row, result)
            per_class[source.label(row)] = per_class.get(source.label(row), 0) + 1
            writer.add(name, row["id"], source.label(row), width=width, height=height)
    if writer.count == 0:
        raise UserError(f"input_path: none of the {len(source.rows)} image files {where} could be read; "
                        "check the files are valid images")
    writer.close()
    empty = [c for c in source.categories or [] if c not in per_class]
    if empty:  # they keep their indices so labels stay aligned with the folder names
        log.warning("%d class(es) have no readable image and stay in the category list with 0 images: %s%s",
                    len(empty), ", ".join(repr(c) for c in empty[:5]), ", ..." if len(empty) > 5 else "")
    report.written = writer.count
    report.labelled = source.labelled
    report.categories = source.categories
    return report


def _listed_bytes(source: ImageDirectory) -> tuple[int, int]:
    """(bytes the rows' files total, counted once per row; most rows naming one file): one stat per row."""
    total, files = 0, Counter()
    for row in source.rows:
        try:
            info = source.image_path(row).stat()
        except OSError:
            continue  # copy_one reports it
        total += info.st_size
        files[(info.st_dev, info.st_ino)] += 1
    return total, max(files.values(), default=0)


def _warn_loose_images(root: Path, source: ImageDirectory) -> None:
    """Say why a folder with class sub-folders came out unlabelled: images lie beside the sub-folders."""
    if source.labelled:
        return
    names = [source.relative_path(row) for row in source.rows]
    loose = [n for n in names if "/" not in n]
    folders = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    if not loose or not folders:
        return
    log.warning("input_path: %d image(s) lie at the top of %s beside %d sub-folder(s) of images (%s%s), so the set "
                "is UNLABELLED (sub-folders name classes only when every image is in one): for a labelled set, move "
                "%s%s into its class folder or delete it, and convert again", len(loose), root, len(folders),
                ", ".join(folders[:5]), ", ..." if len(folders) > 5 else "", ", ".join(loose[:3]),
                ", ..." if len(loose) > 3 else "")
