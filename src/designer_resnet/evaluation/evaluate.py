"""Evaluate Model: multi-class metrics of one scored table, or two side by side."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ..directories import StagedOutput
from ..directories.dataframe_directory import (
    ASSIGNED_LABELS,
    PROBABILITY_PREFIX,
    SCORED_LABELS,
    TRUE_LABELS,
    read_dataframe_directory,
    read_dataframe_schema,
    write_dataframe_directory,
)
from ..directories.meta import EXTENSION_KEY, read_meta
from ..errors import UserError
from ..tracking import MlflowLog, on_tracking_server

log = logging.getLogger(__name__)
DATASET_NAMES = ("Scored dataset", "Scored dataset to compare")
LABEL_FALLBACKS = ("category", "Label", "label")
_LOG_EPS = 1e-15


def label_and_classes(df: pd.DataFrame, extension: dict, schema: dict,
                      input_name: str) -> tuple[str, list[str], list[str]]:
    """The true-label column, the classes, and each class's probability column.

    The schema's designer roles come first: they are all the built-in Score
    Image Model leaves (no extension of ours). Without them, our `_meta.yaml`
    extension names the label column, and columns are found by name.
    """
    score_roles = {k: v for k, v in schema["scoreColumns"].items() if isinstance(v, str)}
    probabilities = {k[len(PROBABILITY_PREFIX):]: v for k, v in score_roles.items() if k.startswith(PROBABILITY_PREFIX)}
    if not probabilities:
        probabilities = {c[len(PROBABILITY_PREFIX):]: c for c in df.columns if c.startswith(PROBABILITY_PREFIX)}
    assigned = score_roles.get(ASSIGNED_LABELS, SCORED_LABELS)
    if not probabilities or assigned not in df.columns or any(c not in df.columns for c in probabilities.values()):
        raise UserError(f"{input_name}: has no '{SCORED_LABELS}' and '{PROBABILITY_PREFIX}<class>' columns; "
                        "connect the output of Score Image Model")
    label = schema["labelColumns"].get(TRUE_LABELS)
    label = label if isinstance(label, str) else None
    ours = extension.get(EXTENSION_KEY) if isinstance(extension, dict) else None
    if label is None and isinstance(ours, dict) and "label_column" in ours:
        label = ours["label_column"]  # None: we scored unlabelled data
    elif label is None:
        label = next((c for c in LABEL_FALLBACKS if c in df.columns), None)
    if label is None or label not in df.columns:
        raise UserError(f"{input_name}: the scored data has no label column; evaluation needs labelled data, "
                        "so score a labelled ImageDirectory (one sub-folder per class)")
    return label, list(probabilities), list(probabilities.values())


def compute_metrics(y_true: list[str], probs: np.ndarray, classes: list[str]) -> dict:
    """Overall and per-class metrics, the confusion matrix, top-k and log loss."""
    classes = list(classes)
    y_true = np.asarray([str(v) for v in y_true], dtype=object)
    y_pred = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    n = len(y_true)
    p_micro, r_micro, f_micro, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, average="micro", zero_division=0)
    p_macro, r_macro, f_macro, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    p_cls, r_cls, f_cls, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    # One-vs-rest accuracy of each class, averaged: the designer's "Average Accuracy".
    per_class_accuracy = [float(np.mean((y_true == c) == (y_pred == c))) for c in classes]
    index = {c: i for i, c in enumerate(classes)}
    true_idx = np.array([index.get(v, -1) for v in y_true])
    p_true = np.where(true_idx >= 0, probs[np.arange(n), np.clip(true_idx, 0, None)], 0.0)
    ranks = np.argsort(-probs, axis=1)
    overall = {
        "Overall Accuracy": float(np.mean(y_true == y_pred)),
        "Average Accuracy": float(np.mean(per_class_accuracy)),
        "Micro Precision": float(p_micro), "Macro Precision": float(p_macro),
        "Micro Recall": float(r_micro), "Macro Recall": float(r_macro),
        "Micro F1": float(f_micro), "Macro F1": float(f_macro),
        "Log Loss": float(-np.mean(np.log(np.clip(p_true, _LOG_EPS, 1.0)))),
    }
    for k in (1, 3, 5):
        if k <= len(classes):
            overall[f"Top-{k} Accuracy"] = float(np.mean((ranks[:, :k] == true_idx[:, None]).any(axis=1)))
    overall["Rows"] = n
    return {
        "overall": overall,
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(classes, p_cls, r_cls, f_cls, support)],
        "confusion_matrix": {"labels": classes,
                             "counts": confusion_matrix(y_true, y_pred, labels=classes).tolist()},
    }


def _evaluate_one(path: Path, input_name: str) -> dict:
    df = read_dataframe_directory(path, input_name=input_name)
    extension = read_meta(path, "DataFrameDirectory", input_name=input_name).get("extension") or {}
    schema = read_dataframe_schema(path, input_name=input_name)
    label, classes, probability_columns = label_and_classes(df, extension, schema, input_name)
    probs = df[probability_columns].to_numpy(dtype=np.float64)
    usable = ~np.isnan(probs).any(axis=1) & df[label].notna().to_numpy()
    if not usable.any():
        raise UserError(f"{input_name}: no row has both a label and scores; check the scored data")
    if not usable.all():
        log.warning("%s: %d row(s) without scores or label left out of the evaluation", input_name, int((~usable).sum()))
    truth = [str(v) for v in df.loc[usable, label]]
    unknown = sorted(set(truth) - set(classes))
    if unknown:
        count = sum(t in unknown for t in truth)
        log.warning("%s: %d row(s) have labels the model was not trained on (%s%s); they count as wrong, and the "
                    "per-class table covers the model's classes only", input_name, count, ", ".join(unknown[:5]),
                    ", ..." if len(unknown) > 5 else "")
    return compute_metrics(truth, probs[usable], classes)


@contextlib.contextmanager
def _pyplot():
    """matplotlib's pyplot on the Agg backend, with its config and font cache in a temporary folder.

    Left to itself matplotlib writes ~/.config/matplotlib and ~/.cache/matplotlib;
    a component writes nothing outside its output. An MPLCONFIGDIR the user set is kept.
    """
    with tempfile.TemporaryDirectory(prefix="designer-resnet-mpl-") as tmp:
        own = "MPLCONFIGDIR" not in os.environ
        if own:
            os.environ["MPLCONFIGDIR"] = tmp
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            yield plt
        finally:
            if own:
                os.environ.pop("MPLCONFIGDIR", None)


def plot_confusion(metrics: dict, path: Path, title: str) -> None:
    with _pyplot() as plt:
        _plot_confusion(plt, metrics, path, title)


def _plot_confusion(plt, metrics: dict, path: Path, title: str) -> None:
    labels = metrics["confusion_matrix"]["labels"]
    counts = np.array(metrics["confusion_matrix"]["counts"])
    side = max(4, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    if len(labels) <= 30:
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > counts.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_per_class(results: list[dict], path: Path) -> None:
    with _pyplot() as plt:
        _plot_per_class(plt, results, path)


def _plot_per_class(plt, results: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(len(results), 1, figsize=(max(6, 0.6 * len(results[0]["per_class"]) + 2), 3.5 * len(results)),
                             squeeze=False)
    for ax, result, name in zip(axes[:, 0], results, DATASET_NAMES):
        rows = result["per_class"]
        x = np.arange(len(rows))
        for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
            ax.bar(x + offset, [r[key] for r in rows], width=0.27, label=key)
        ax.set_xticks(x, [r["class"] for r in rows], rotation=90)
        ax.set_ylim(0, 1.05)
        ax.set_title(name)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate_model(scored: str | Path, output_dir: str | Path, *, compare: str | Path | None = None) -> list[dict]:
    """Evaluate one scored table (and optionally a second); write the metrics table, JSON and PNGs."""
    results = [_evaluate_one(Path(scored), "scored_dataset")]
    if compare is not None:
        results.append(_evaluate_one(Path(compare), "scored_dataset_to_compare"))
    table = pd.DataFrame([{"Dataset": name, **r["overall"]} for name, r in zip(DATASET_NAMES, results)])
    with StagedOutput(output_dir, output_name="evaluation_results") as stage:
        write_dataframe_directory(stage.path, table)
        with open(stage.path / "metrics.json", "w", encoding="utf-8") as f:
            json.dump({name: r for name, r in zip(DATASET_NAMES, results)}, f, indent=1)
        for i, (name, r) in enumerate(zip(DATASET_NAMES, results)):
            plot_confusion(r, stage.path / ("confusion_matrix.png" if i == 0 else "confusion_matrix_to_compare.png"), name)
        plot_per_class(results, stage.path / "per_class_metrics.png")
        if on_tracking_server():  # on Azure ML the job's run; locally metrics.json says it all, at no cost
            tracker = MlflowLog(stage.path, Path(output_dir), "evaluate_model")
            try:
                for i, r in enumerate(results):
                    prefix = "" if i == 0 else "compare "
                    tracker.log({(prefix + k).replace(" ", "_").lower(): v for k, v in r["overall"].items()})
            finally:
                tracker.close()
    return results
