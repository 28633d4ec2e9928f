"""Score Image Model across nodes: mini-batches of files scored into parts, then the parts merged into one table.

Azure ML's parallel job hands each worker process lists of file paths from
the dataset's folder (`run(mini_batch)`), metadata files included and in no
promised order. `MiniBatchScorer` scores the ones that are the ImageDirectory's
listed images and writes their probabilities, by row, into a part file named
after the rows it holds: a retried mini-batch rewrites the same part, so no row
is ever counted twice. `merge_parts` then lays the parts out in row order and
writes exactly what Score Image Model writes for the same images.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..directories import StagedOutput
from ..directories.dataframe_directory import PROBABILITY_PREFIX
from ..directories.image_directory import ImageDirectory
from ..errors import UserError
from ..inference import Predictor
from ..models.model_directory import read_trained
from ..transforms.ledger import Ledger
from .score import predict_rows, write_scored

log = logging.getLogger(__name__)

PART_SUFFIX = ".scores.parquet"
ROW, REASON = "row", "unreadable"  # a part's columns beside the probabilities
# What `run` returns for each path of its mini-batch (one result per item, as the parallel driver counts them).
SCORED, NOT_AN_IMAGE_ROW = "scored", "not one of the dataset's listed images"


def part_name(rows: list[int]) -> str:
    """The part file of a set of rows: the same rows, the same name, whichever worker or retry writes it."""
    digest = hashlib.sha256(",".join(map(str, sorted(rows))).encode()).hexdigest()[:20]
    return digest + PART_SUFFIX


class MiniBatchScorer:
    """One parallel worker's model, dataset index and part folder (what `init()` builds)."""

    def __init__(self, model_dir, dataset_dir, parts_dir, *, batch_size: int, precision: str, memory_format: str):
        self.model = read_trained(model_dir, input_name="trained_model")
        self.directory = ImageDirectory.load(dataset_dir, input_name="dataset")
        self.predictor = Predictor(self.model, Ledger(self.directory.extension), precision=precision,
                                   memory_format=memory_format)
        self.batch_size = batch_size
        self.rows_by_path: dict[str, list[int]] = {}  # several rows may name one file
        for i, row in enumerate(self.directory.rows):
            self.rows_by_path.setdefault(os.path.realpath(self.directory.image_path(row)), []).append(i)
        self.parts = Path(parts_dir)
        self.parts.mkdir(parents=True, exist_ok=True)

    def run(self, mini_batch: list) -> list[str]:
        """Score a mini-batch of file paths into its part; one result line per path, in the mini-batch's order."""
        found = {str(path): self.rows_by_path.get(os.path.realpath(path), []) for path in mini_batch}
        rows = sorted({row for listed in found.values() for row in listed})
        reasons: dict[int, str] = {}
        if rows:
            probs, failed = predict_rows(self.predictor, self.directory, rows, batch_size=self.batch_size,
                                         workers=0, progress=False)
            reasons = dict(failed)
            self._write_part(rows, probs, reasons)
        return [f"{path}: " + (NOT_AN_IMAGE_ROW if not listed else
                               f"unreadable ({reasons[listed[0]]})" if listed[0] in reasons else SCORED)
                for path, listed in found.items()]

    def _write_part(self, rows: list[int], probs: np.ndarray, reasons: dict[int, str]) -> None:
        table = pd.DataFrame({ROW: np.asarray(rows, dtype=np.int64),
                              REASON: [reasons.get(row) for row in rows]})
        for c, name in enumerate(self.model.categories):
            table[PROBABILITY_PREFIX + name] = probs[:, c]
        target = self.parts / part_name(rows)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        table.to_parquet(temporary, index=False)
        os.replace(temporary, target)  # atomic: a reader sees a whole part or none


@dataclass
class MergeReport:
    scored: int = 0
    failed: list[tuple[object, str]] = field(default_factory=list)  # (row id, reason)


# A row no part holds: its mini-batch failed on every try (the parallel step's error threshold let it pass).
NOT_SCORED = "not scored: its mini-batch failed (see the parallel step's logs)"


def merge_parts(parts_dir, dataset_dir, output_dir) -> MergeReport:
    """The parts of a parallel scoring run as one DataFrameDirectory, Score Image Model's table for the same data."""
    directory = ImageDirectory.load(dataset_dir, input_name="dataset")
    parts = sorted(Path(parts_dir).glob("*" + PART_SUFFIX)) if Path(parts_dir).is_dir() else []
    if not parts:
        raise UserError(f"scored_parts: {parts_dir} holds no scored parts ({PART_SUFFIX}); connect the output of "
                        "Score Image Model (parallel) that scored this dataset")
    categories: list[str] | None = None
    probs = reasons = None
    for part in parts:
        table = pd.read_parquet(part)
        names = [c[len(PROBABILITY_PREFIX):] for c in table.columns if c.startswith(PROBABILITY_PREFIX)]
        if categories is None:
            categories = names
            probs = np.full((len(directory), len(names)), np.nan, dtype=np.float32)
            reasons = np.full(len(directory), NOT_SCORED, dtype=object)
        if names != categories or (len(table) and table[ROW].max() >= len(directory)):
            raise UserError(f"scored_parts: {part.name} was not scored with the same model and dataset as the "
                            "other parts; give the parallel step a new output folder and score again")
        rows = table[ROW].to_numpy()
        probs[rows] = table[[PROBABILITY_PREFIX + c for c in categories]].to_numpy(dtype=np.float32)
        reasons[rows] = table[REASON].to_numpy(dtype=object)
    failed = [(int(i), str(reason)) for i, reason in enumerate(reasons) if reason is not None]
    with StagedOutput(output_dir, output_name="scored_dataset") as stage:
        write_scored(stage.path, directory, categories, probs, failed)
    return MergeReport(len(directory) - len(failed), [(directory.rows[i].get("id"), r) for i, r in failed])
