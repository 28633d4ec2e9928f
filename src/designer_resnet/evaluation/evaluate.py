"""Evaluate Model: multi-class metrics of one scored table, or two side by side."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

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
_PROB_SLACK = 1e-6  # float32 softmax rounding: 1.0000001 is still a probability
# The most classes a plot shows. Beyond it each plot summarises (the most confused, the lowest F1) and
# metrics.json holds every class: a figure 0.5 inch per class grows with the square of the classes.
PLOT_CLASSES = 40


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
    """Overall and per-class metrics, the confusion matrix, top-k and log loss.

    Everything is counted from one confusion matrix (a bincount) and one pass
    over `probs`, not one pass over the rows per class: thousands of classes
    evaluate in seconds. A label outside `classes` counts as wrong and as no
    class's support.
    """
    classes = list(classes)
    c, n = len(classes), len(y_true)
    index = {name: i for i, name in enumerate(classes)}
    true_idx = np.array([index.get(str(v), -1) for v in y_true], dtype=np.int64)
    pred_idx = probs.argmax(axis=1)
    known = true_idx >= 0
    counts = np.bincount(true_idx[known] * c + pred_idx[known], minlength=c * c).reshape(c, c)
    tp = np.diag(counts).astype(np.float64)
    support = counts.sum(axis=1)
    predicted = np.bincount(pred_idx, minlength=c)  # rows of unknown labels are false positives too
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)
    # One-vs-rest accuracy of each class, averaged: the designer's "Average Accuracy".
    per_class_accuracy = (n - (predicted - tp) - (support - tp)) / n
    p_true = np.where(known, probs[np.arange(n), np.clip(true_idx, 0, None)], 0.0)
    # Classes scored above the true one: top-k holds when fewer than k are.
    above = (probs > p_true[:, None]).sum(axis=1)
    right, known_rows = tp.sum(), int(known.sum())
    overall = {
        "Overall Accuracy": float(right / n),
        "Average Accuracy": float(per_class_accuracy.mean()),
        "Micro Precision": float(right / n), "Macro Precision": float(precision.mean()),
        "Micro Recall": float(_ratio(right, known_rows)), "Macro Recall": float(recall.mean()),
        "Micro F1": float(_ratio(2 * right, n + known_rows)), "Macro F1": float(f1.mean()),
        "Log Loss": float(-np.mean(np.log(np.clip(p_true, _LOG_EPS, 1.0)))),
    }
    for k in (1, 3, 5):
        if k <= c:
            overall[f"Top-{k} Accuracy"] = float(np.mean(known & (above < k)))
    overall["Rows"] = n
    return {
        "overall": overall,
        "per_class": [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(classes, precision, recall, f1, support)],
        "confusion_matrix": {"labels": classes, "counts": counts.tolist()},
    }


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape),
                     where=denominator != 0)


def _probabilities(df: pd.DataFrame, columns: list[str], input_name: str) -> np.ndarray:
    """The probability columns as floats (rows × classes); NaN where a row was not scored.

    Numbers stored as text are read as numbers and an empty cell as not scored;
    any other text, an infinity or a value outside 0-1 is refused, naming the cell.
    """
    text = [col for col in columns if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])]
    if text:
        df = df[columns].copy()
        for col in text:
            raw = df[col]
            blank = raw.isna() | raw.astype(str).str.strip().str.lower().isin(["", "nan", "none", "null"])
            number = pd.to_numeric(raw.where(~blank), errors="coerce")
            bad = number.isna() & ~blank
            if bad.any() or pd.api.types.is_bool_dtype(raw):
                row = int(np.argmax(bad.to_numpy())) if bad.any() else 0
                raise UserError(f"{input_name}: column '{col}' holds {raw.iloc[row]!r} (row {row}), not a probability; "
                                f"the '{PROBABILITY_PREFIX}<class>' columns must hold numbers from 0 to 1, as Score "
                                "Image Model writes them: rescore the images or convert the column to numbers")
            df[col] = number
        log.warning("%s: %d probability column(s) stored as text (%s%s) read as numbers", input_name, len(text),
                    text[0], ", ..." if len(text) > 1 else "")
    probs = df[columns].to_numpy(dtype=np.float64)
    bad = ~np.isnan(probs) & ~((probs >= -_PROB_SLACK) & (probs <= 1 + _PROB_SLACK))
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise UserError(f"{input_name}: column '{columns[col]}' holds {float(probs[row, col])!r} (row {row}), not a probability "
                        f"from 0 to 1; the '{PROBABILITY_PREFIX}<class>' columns must hold the model's probabilities "
                        "(softmax outputs), not scores or logits: rescore with Score Image Model")
    return probs


def _true_labels(column: pd.Series, classes: list[str]) -> pd.Series:
    """The label column as class names (None where missing).

    A label column of class indices or numbers turns into floats when one
    label is missing (pandas has no missing integer): 3.0 reads as class "3".
    """
    known = set(classes)

    def name(value) -> str:
        text = str(value)
        if text not in known and isinstance(value, (float, np.floating)) and float(value).is_integer():
            whole = str(int(value))
            return whole if whole in known else text
        return text

    present = column.notna()
    mapping = {value: name(value) for value in column[present].unique()}
    return column.map(mapping).where(present, None)


def _evaluate_one(path: Path, input_name: str) -> dict:
    df = read_dataframe_directory(path, input_name=input_name)
    extension = read_meta(path, "DataFrameDirectory", input_name=input_name).get("extension") or {}
    schema = read_dataframe_schema(path, input_name=input_name)
    label, classes, probability_columns = label_and_classes(df, extension, schema, input_name)
    probs = _probabilities(df, probability_columns, input_name)
    labels = _true_labels(df[label], classes)
    usable = ~np.isnan(probs).any(axis=1) & labels.notna().to_numpy()
    if not usable.any():
        raise UserError(f"{input_name}: no row has both a label and scores; check the scored data")
    if not usable.all():
        log.warning("%s: %d row(s) without scores or label left out of the evaluation", input_name, int((~usable).sum()))
    truth = labels[usable].tolist()
    unknown = sorted(set(truth) - set(classes))
    if len(unknown) == len(set(truth)):
        raise UserError(f"{input_name}: none of the labels in column '{label}' ({_some(unknown)}) is a class of the "
                        f"model that scored it ({_some(classes)}); score this data with a model trained on its "
                        "classes, or connect the scored data of this model's own test set")
    if unknown:
        count = sum(t in unknown for t in truth)
        log.warning("%s: %d row(s) have labels the model was not trained on (%s); they count as wrong, and the "
                    "per-class table covers the model's classes only", input_name, count, _some(unknown))
    return compute_metrics(truth, probs[usable], classes)


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


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
    """The confusion matrix as a PNG; beyond PLOT_CLASSES classes, only the most confused of them."""
    with _pyplot() as plt:
        _plot_confusion(plt, metrics, path, title)


def _plot_confusion(plt, metrics: dict, path: Path, title: str) -> None:
    labels = metrics["confusion_matrix"]["labels"]
    counts = np.asarray(metrics["confusion_matrix"]["counts"])
    if len(labels) > PLOT_CLASSES:
        shown = most_confused(counts, PLOT_CLASSES)
        log.info("%s: %s shows the %d most confused of %d classes; the whole matrix is metrics.json's "
                 "\"%s\" -> \"confusion_matrix\" (\"labels\", \"counts\": one row per true class)",
                 title, path.name, len(shown), len(labels), title)
        title = f"{title}: the {len(shown)} most confused of {len(labels)} classes"
        labels, counts = [labels[i] for i in shown], counts[np.ix_(shown, shown)]
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


def most_confused(counts: np.ndarray, k: int) -> list[int]:
    """Indices (sorted) of k classes: those of the largest off-diagonal cells first, then those with most errors."""
    errors = counts.copy()
    np.fill_diagonal(errors, 0)
    rows, cols = np.nonzero(errors)
    chosen: dict[int, None] = {}  # insertion-ordered set
    for cell in np.argsort(-errors[rows, cols], kind="stable"):
        if len(chosen) >= k:
            break
        chosen.update({int(rows[cell]): None, int(cols[cell]): None})
    for i in np.argsort(-(errors.sum(axis=0) + errors.sum(axis=1)), kind="stable"):
        if len(chosen) >= k:
            break
        chosen.setdefault(int(i), None)
    return sorted(list(chosen)[:k])


def plot_per_class(results: list[dict], path: Path) -> None:
    """Precision, recall and F1 per class; beyond PLOT_CLASSES classes, the ones with the lowest F1."""
    with _pyplot() as plt:
        _plot_per_class(plt, results, path)


def _plot_per_class(plt, results: list[dict], path: Path) -> None:
    width = min(len(results[0]["per_class"]), PLOT_CLASSES)
    fig, axes = plt.subplots(len(results), 1, figsize=(max(6, 0.6 * width + 2), 3.5 * len(results)), squeeze=False)
    for ax, result, name in zip(axes[:, 0], results, DATASET_NAMES):
        rows = result["per_class"]
        if len(rows) > PLOT_CLASSES:
            log.info("%s: %s shows the %d classes with the lowest F1 of %d; metrics.json's \"%s\" -> \"per_class\" "
                     "has every class", name, path.name, PLOT_CLASSES, len(rows), name)
            lowest = sorted(np.argsort([r["f1"] for r in rows], kind="stable")[:PLOT_CLASSES])
            ax.set_title(f"{name}: the {PLOT_CLASSES} classes with the lowest F1 of {len(rows)}")
            rows = [rows[i] for i in lowest]
        else:
            ax.set_title(name)
        x = np.arange(len(rows))
        for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
            ax.bar(x + offset, [r[key] for r in rows], width=0.27, label=key)
        ax.set_xticks(x, [r["class"] for r in rows], rotation=90)
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_metrics(path: Path, results: dict[str, dict]) -> None:
    """metrics.json: indented, except that each confusion-matrix row is one line.

    json's indenting encoder is pure Python: the 4 million cells of 2,000
    classes, one per line, took 20 s. Rows go through the C encoder instead.
    """
    shell, rows = {}, {}
    for name, result in results.items():
        token = json.dumps(f"confusion-matrix-rows-{uuid.uuid4().hex}")  # no class name or number can equal it
        rows[token] = result["confusion_matrix"]["counts"]
        shell[name] = {**result, "confusion_matrix": {**result["confusion_matrix"], "counts": json.loads(token)}}
    text = json.dumps(shell, indent=1)
    for token, counts in rows.items():
        text = text.replace(token, "[\n" + ",\n".join(map(json.dumps, counts)) + "\n]", 1)
    path.write_text(text, encoding="utf-8")


def evaluate_model(scored: str | Path, output_dir: str | Path, *, compare: str | Path | None = None) -> list[dict]:
    """Evaluate one scored table (and optionally a second); write the metrics table, JSON and PNGs."""
    results = [_evaluate_one(Path(scored), "scored_dataset")]
    if compare is not None:
        results.append(_evaluate_one(Path(compare), "scored_dataset_to_compare"))
    table = pd.DataFrame([{"Dataset": name, **r["overall"]} for name, r in zip(DATASET_NAMES, results)])
    with StagedOutput(output_dir, output_name="evaluation_results") as stage:
        write_dataframe_directory(stage.path, table)
        write_metrics(stage.path / "metrics.json", dict(zip(DATASET_NAMES, results)))
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
