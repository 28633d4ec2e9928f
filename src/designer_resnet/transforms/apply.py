"""Apply Image Transformation: write transformed images, defer what must be re-drawn."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..parallel import PROGRESS_MIN, ordered_map
from ..component_source import default
from ..directories import StagedOutput
from ..directories.image_directory import ImageDirectory, ImageDirectoryWriter, UnreadableImage, is_image_name
from ..directories.transformation_directory import read_transformation_directory
from ..errors import UserError
from .ledger import Ledger
from .ops import image_pipeline, plan, validate_ops

log = logging.getLogger(__name__)

_SPEC = "apply_image_transformation"
MODES = {"For training": "training", "For inference": "inference"}
# A JPEG the ops changed is written as JPEG at this quality: about 2 levels in 255 off on average, for 0.27-0.29
# of a PNG's bytes and a quarter of its decode time (three photos resized to 256). Writing PNG halved training's
# loader throughput; `lossless` still asks for it.
JPEG_QUALITY = 95
# Colour at half resolution, as nearly every camera and ImageNet-style JPEG already has it: 4:4:4 keeps colour
# detail those sources mostly lack, for 15-45% more bytes and about 30% longer decodes.
JPEG_SUBSAMPLING = "4:2:0"
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: Pillow's name for a camera JPEG with extra frames
# The longest side a JPEG file can hold (the format's limit as libjpeg enforces it); a longer image is written as PNG.
JPEG_MAX_SIDE = 65500


@dataclass
class ApplyReport:
    written: int = 0
    applied: list = field(default_factory=list)
    deferred: list = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row id, reason)


def read_transformation(path: str | Path, *, input_name: str = "input") -> list[list]:
    """The ops of a TransformationDirectory, validated: unknown ops and out-of-range sizes refused in one line."""
    return validate_ops(read_transformation_directory(path, input_name=input_name), input_name=input_name)


def _encoding(source_format: str | None, lossless: bool, size: tuple[int, int]) -> tuple[str, str, dict]:
    """(suffix, Pillow format, save options) for an image the ops changed: JPEG stays JPEG unless `lossless`
    or the image has grown past what a JPEG can hold."""
    if source_format in _JPEG_FORMATS and not lossless and max(size) <= JPEG_MAX_SIDE:
        return ".jpg", "JPEG", {"quality": JPEG_QUALITY, "subsampling": JPEG_SUBSAMPLING}
    return ".png", "PNG", {}


def apply_image_transformation(transform_dir: str | Path, input_dir: str | Path, output_dir: str | Path,
                               *, mode: str = default(_SPEC, "mode"), lossless: bool = default(_SPEC, "lossless"),
                               workers: int | None = None) -> ApplyReport:
    """Transform the images of `input_dir`; `mode` is 'For training' or 'For inference'.

    A file no op changes is copied byte for byte; a changed one is written as
    JPEG (from JPEG, at JPEG_QUALITY) or PNG, or always PNG when `lossless`.
    """
    if mode not in MODES:
        raise UserError(f"mode: {mode!r} is not one of {', '.join(repr(m) for m in MODES)}")
    ops = read_transformation(transform_dir, input_name="input_transformation_path")
    source = ImageDirectory.load(input_dir, input_name="input_image_path")
    ledger = Ledger(source.extension)
    # Ops the source still owes come first: its files stop where they stopped.
    file_ops, deferred = plan(ledger.pending + ops, MODES[mode])
    pipeline = image_pipeline(file_ops)
    extension = ledger.extension_after(file_ops, deferred, mode)
    report = ApplyReport(applied=file_ops, deferred=deferred)

    with StagedOutput(output_dir, output_name="output_path") as stage:
        writer = ImageDirectoryWriter(stage.path, source.categories if source.labelled else None,
                                      extension=extension, schema=source.schema, image_ref=source.image_ref)

        def transform_one(row: dict):
            try:  # decoded even when its bytes are kept: an unreadable file is skipped, and the row gets its size
                image, source_format = source.open_image_and_format(row)
                image = pipeline(image)
            except UnreadableImage as exc:
                return row, None, exc.reason
            except (OSError, SyntaxError, ValueError) as exc:  # ImageTooLarge among them (ops.MAX_PIXELS)
                return row, None, f"{exc.__class__.__name__}: {exc}"
            original = source.relative_path(row)
            if not file_ops and is_image_name(original):  # nothing to write into it: the ledger says so too
                name = writer.target_name(row["id"], source.label(row), os.path.splitext(original)[1])
                shutil.copyfile(source.image_path(row), stage.path / name)
            else:
                suffix, image_format, options = _encoding(source_format, lossless, image.size)
                name = writer.target_name(row["id"], source.label(row), suffix)
                image.save(stage.path / name, format=image_format, **options)
            return row, name, image.size

        with writer, tqdm(total=len(source), unit="img", desc="transforming", disable=len(source) < PROGRESS_MIN) as bar:
            for row, name, result in ordered_map(transform_one, source.rows, workers):
                bar.update()
                if name is None:
                    report.skipped.append((row.get("id"), result))
                    continue
                info = {k: v for k, v in row[source.image_ref].items() if k not in ("width", "height")}
                info.update(file_name=name, width=result[0], height=result[1])
                writer.add_row({**row, source.image_ref: info})
            if writer.count == 0:
                raise UserError(f"input_image_path: none of the {len(source)} images could be read; "
                                "check the ImageDirectory with Convert to Image Directory")
        report.written = writer.count
    return report
