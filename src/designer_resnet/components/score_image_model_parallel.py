"""Score Image Model (parallel): the entry script Azure ML's parallel job runs on every worker process.

The parallel driver imports this file as a script, calls `init()` once per
worker process with the component's program arguments on `sys.argv` (beside
arguments of its own), then `run(mini_batch)` with lists of file paths from the
dataset's folder, and `shutdown()` at the end. The imports are absolute, since
the driver loads the file by its path rather than as part of the package.

Locally, `designer-resnet run` drives it the same way (runner/parallel.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The folder holding the package (the code snapshot's root): the driver may put only this file's folder on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from designer_resnet.component_source import PARALLEL, parse  # noqa: E402
from designer_resnet.scoring.parallel import MiniBatchScorer  # noqa: E402

NAME = "score_image_model"
_scorer: MiniBatchScorer | None = None


def init(argv=None) -> None:
    """Read the model and the dataset's rows once per worker process."""
    global _scorer
    args = parse(NAME, sys.argv[1:] if argv is None else argv, kind=PARALLEL, known_only=True)
    ports, params = args.ports, args.params
    _scorer = MiniBatchScorer(ports["trained_model"], ports["dataset"], ports["scored_parts"],
                              batch_size=params["batch_size"], precision=params["precision"],
                              memory_format=params["memory_format"])


def run(mini_batch) -> list[str]:
    """Score one mini-batch of file paths into its part; one result per path (the driver counts them)."""
    if _scorer is None:
        raise RuntimeError("run() before init(): the parallel driver calls init() first")
    return _scorer.run(list(mini_batch))


def shutdown() -> None:
    global _scorer
    _scorer = None
