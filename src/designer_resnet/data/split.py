"""Split Image Directory: a seeded, stratified split of rows into two sets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..component_source import default
from ..directories import StagedOutput
from ..directories.image_directory import ImageDirectory, ImageDirectoryWriter
from ..errors import UserError

_SPEC = "split_image_directory"


def split_indices(labels: list, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices for (first, second) output, each in input order.

    The first gets round(fraction × n) rows. With labels, each class is
    split in proportion (unlabelled rows form one group), the rounding remainder going to the classes whose
    exact share was cut most (largest remainder), so both sets keep the
    class mix as closely as integer counts allow.
    """
    n = len(labels)
    if n < 2:
        raise UserError(f"input: the split needs at least 2 images, the input has {n}")
    low, high = 1 / n, 1 - 1 / n
    if not (low - 1e-12 <= fraction <= high + 1e-12):
        raise UserError(f"fraction: {fraction} is outside the valid range [{low:.6g}, {high:.6g}] "
                        f"for {n} images (each output needs at least one)")
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    keys = sorted(groups, key=str)
    target = min(n - 1, max(1, round(fraction * n)))
    exact = {k: fraction * len(groups[k]) for k in keys}
    take = {k: int(np.floor(exact[k])) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - take[k]), str(k)))
    for k in by_remainder[: target - sum(take.values())]:
        take[k] += 1
    first: list[int] = []
    for k in keys:
        members = np.array(groups[k])
        rng.shuffle(members)
        first.extend(int(i) for i in members[: take[k]])
    chosen = set(first)
    return sorted(chosen), [i for i in range(n) if i not in chosen]


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when source and target share a file system, else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_subset(source: ImageDirectory, indices: list[int], out: Path) -> int:
    """Write the chosen rows of `source` (rows, schema and extension kept) into `out`."""
    writer = ImageDirectoryWriter(out, source.categories, extension=source.extension,
                                  schema=source.schema, image_ref=source.image_ref)
    with writer:
        for i in indices:
            row = source.rows[i]
            src = source.image_path(row)
            if not src.is_file():
                raise UserError(f"input_path: {src.relative_to(source.root)} (row id {row.get('id')}) is listed but "
                                f"missing from {source.root}; recreate the ImageDirectory with Convert to Image Directory")
            link_or_copy(src, out / src.relative_to(source.root))
            writer.add_row(row)
    return writer.count


def check_separate_outputs(first_dir: str | Path, second_dir: str | Path) -> None:
    """Refuse two output paths that name one folder, however spelled, or one inside the other."""
    first, second = Path(first_dir), Path(second_dir)
    a, b = Path(os.path.realpath(first)), Path(os.path.realpath(second))
    same = a == b
    if not same and first.exists() and second.exists():
        try:
            same = os.path.samefile(first, second)  # e.g. a case-insensitive file system
        except OSError:
            pass
    if same:
        raise UserError(f"output_path2: {second_dir} is the same folder as output_path1 ({first_dir}); "
                        "choose two different folders")
    if a in b.parents:
        raise UserError(f"output_path2: {second_dir} is inside output_path1 ({first_dir}); "
                        "choose two separate folders")
    if b in a.parents:
        raise UserError(f"output_path2: {second_dir} contains output_path1 ({first_dir}); "
                        "choose two separate folders")


def split_image_directory(input_dir: str | Path, first_dir: str | Path, second_dir: str | Path,
                          *, fraction: float = default(_SPEC, "fraction"),
                          seed: int = default(_SPEC, "random_seed")) -> tuple[int, int]:
    """Split an ImageDirectory into two; returns the row counts written."""
    check_separate_outputs(first_dir, second_dir)
    source = ImageDirectory.load(input_dir, input_name="input_path")
    labels = [source.label(r) for r in source.rows]
    first, second = split_indices(labels, fraction, seed)
    with StagedOutput(first_dir, output_name="output_path1") as s1, StagedOutput(second_dir, output_name="output_path2") as s2:
        n1 = write_subset(source, first, s1.path)
        n2 = write_subset(source, second, s2.path)
    return n1, n2
