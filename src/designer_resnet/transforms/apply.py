"""Apply Image Transformation: write transformed images, defer what must be re-drawn."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..parallel import PROGRESS_MIN, ordered_map
from ..component_source import default
from ..directories import StagedOutput
from ..directories.image_directory import ImageDirectory, ImageDirectoryWriter, UnreadableImage
from ..directories.transformation_directory import read_transformation_directory
from ..errors import UserError
from .ledger import Ledger
from .ops import image_pipeline, plan, validate_ops

log = logging.getLogger(__name__)

_SPEC = "apply_image_transformation"
MODES = {"For training": "training", "For inference": "inference"}


@dataclass
class ApplyReport:
    written: int = 0
    applied: list = field(default_factory=list)
    deferred: list = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row id, reason)


def read_transformation(path: str | Path, *, input_name: str = "input") -> list[list]:
    """The ops of a TransformationDirectory, validated: unknown ops and out-of-range sizes refused in one line."""
    return validate_ops(read_transformation_directory(path, input_name=input_name), input_name=input_name)


def apply_image_transformation(transform_dir: str | Path, input_dir: str | Path, output_dir: str | Path,
                               *, mode: str = default(_SPEC, "mode"), workers: int | None = None) -> ApplyReport:
    """Transform the images of `input_dir`; `mode` is 'For training' or 'For inference'."""
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
            try:
                image = pipeline(source.open_image(row))
            except UnreadableImage as exc:
                return row, None, exc.reason
            except (OSError, SyntaxError, ValueError) as exc:  # ImageTooLarge among them (ops.MAX_PIXELS)
                return row, None, f"{exc.__class__.__name__}: {exc}"
            name = writer.target_name(row["id"], source.label(row), ".png")
            image.save(stage.path / name, format="PNG")
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
