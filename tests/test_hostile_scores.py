"""Scored data from elsewhere, thousands of classes, and models or images that give no answer (issue 15, round 3).

Each bad input ends in one `error:` line naming the input and the fix, exit
code 1 and no output; where there is a right answer, it is given instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from designer_resnet.directories.dataframe_directory import (
    ASSIGNED_LABELS, PROBABILITY_PREFIX, SCORED_LABELS, read_dataframe_directory, write_dataframe_directory)
from designer_resnet.errors import UserError
from designer_resnet.evaluation.evaluate import evaluate_model

from conftest import convert_train_valid, run_module

PROB = PROBABILITY_PREFIX


def _scored(path, classes: list[str], n: int, *, seed=0, label_values=None) -> tuple[list, np.ndarray]:
    """A scored DataFrameDirectory as Score Image Model writes it: n rows over `classes`."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(classes), n)
    logits = rng.normal(size=(n, len(classes)))
    logits[np.arange(n), truth] += 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = [classes[t] for t in truth] if label_values is None else label_values(truth)
    columns = {"id": np.arange(n), "category": labels, SCORED_LABELS: [classes[i] for i in probs.argmax(axis=1)]}
    columns.update({PROB + c: probs[:, i] for i, c in enumerate(classes)})
    roles = {ASSIGNED_LABELS: SCORED_LABELS, **{PROB + c: PROB + c for c in classes}}
    write_dataframe_directory(path, pd.DataFrame(columns), label_column="category", score_columns=roles)
    return labels, probs


def _rewrite(src, dst, change) -> None:
    """Copy the scored folder `src` to `dst` with `change(table)` applied to its table."""
    from designer_resnet.directories.dataframe_directory import read_dataframe_schema

    table = read_dataframe_directory(src)
    change(table)
    schema = read_dataframe_schema(src)
    write_dataframe_directory(dst, table, label_column=schema["labelColumns"]["True Labels"],
                              score_columns=schema["scoreColumns"])


def _one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# --- item 2: Evaluate Model with thousands of classes -------------------------------------------------------------

_PEAK = """
import resource, sys
from designer_resnet.components.evaluate_model import main
from designer_resnet.errors import run_entry
code = run_entry(main, sys.argv[1:])
print("peak-rss-kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""
_ADDRESS_SPACE = 3 * 2**30  # a runaway figure fails fast in the test instead of filling the machine


def _limit_address_space():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))


def test_two_thousand_classes_evaluate_in_bounded_memory_with_complete_metrics(tmp_path):
    """2,000 classes once took a 1,000-inch confusion-matrix figure and ended in MemoryError."""
    classes = [f"class{i:04d}" for i in range(2000)]
    truth, probs = _scored(tmp_path / "scored", classes, 2000)
    result = subprocess.run([sys.executable, "-c", _PEAK, "--scored_dataset", str(tmp_path / "scored"),
                             "--evaluation_results", str(tmp_path / "eval")],
                            capture_output=True, text=True, timeout=300, preexec_fn=_limit_address_space)
    assert result.returncode == 0, result.stderr[-2000:]
    peak_gib = int(result.stdout.split("peak-rss-kib")[1].split()[0]) / 2**20
    # 300 classes took 6.45 GiB before the fix. Fixed, it peaks at 0.73 to 1.08 GiB depending on the machine and
    # the fresh virtual environment (same packages, measured 2026-12-01), so the bound leaves room for that spread.
    assert peak_gib < 1.5, f"peak RSS {peak_gib:.2f} GiB"
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())["Scored dataset"]
    counts = np.array(saved["confusion_matrix"]["counts"])
    assert counts.shape == (2000, 2000) and counts.sum() == 2000
    pred = probs.argmax(axis=1)
    assert counts[classes.index(truth[0]), pred[0]] >= 1
    assert len(saved["per_class"]) == 2000
    assert saved["overall"]["Overall Accuracy"] == pytest.approx(np.mean([classes[p] == t for p, t in zip(pred, truth)]))
    assert "the 40 most confused of 2000 classes" in result.stdout and "metrics.json" in result.stdout
    for png in ("confusion_matrix.png", "per_class_metrics.png"):
        with Image.open(tmp_path / "eval" / png) as img:
            assert max(img.size) <= 2500, (png, img.size)


def test_plots_of_many_classes_are_drawn_at_a_readable_size(tmp_path, monkeypatch, caplog):
    """No canvas beyond 3,000 pixels a side: 300 classes drew a 15,200-pixel square (93 s, 6.45 GiB)."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from matplotlib.backends import backend_agg

    canvases = []
    draw = backend_agg.RendererAgg.__init__

    def bounded(self, width, height, dpi):
        canvases.append((width, height))
        assert max(width, height) <= 3000, f"a {width:.0f} x {height:.0f} pixel canvas"
        draw(self, width, height, dpi)

    monkeypatch.setattr(backend_agg.RendererAgg, "__init__", bounded)
    classes = [f"c{i}" for i in range(300)]
    _scored(tmp_path / "scored", classes, 600)
    with caplog.at_level("INFO"):
        (result,) = evaluate_model(tmp_path / "scored", tmp_path / "eval")
    assert canvases
    assert len(result["confusion_matrix"]["counts"]) == 300 and len(result["per_class"]) == 300
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "confusion_matrix.png shows the 40 most confused of 300 classes" in said
    assert "per_class_metrics.png shows the 40 classes with the lowest F1 of 300" in said


def test_the_most_confused_classes_are_the_ones_plotted():
    from designer_resnet.evaluation.evaluate import most_confused

    counts = np.diag([5] * 6)
    counts[4, 1] = 7  # class 4 taken for 1 most often, then 2 for 5
    counts[2, 5] = 3
    assert most_confused(counts, 2) == [1, 4]
    assert most_confused(counts, 4) == [1, 2, 4, 5]
    assert len(most_confused(np.diag([1] * 6), 3)) == 3  # a perfect model still gets a plot


# --- item 15: scored data from elsewhere ---------------------------------------------------------------------------


def test_float_labels_from_one_missing_label_read_as_the_class_names(tmp_path, caplog):
    """Classes named 0..3: one missing label turns the column into floats (2.0), which are still class "2"."""
    classes = ["0", "1", "2", "3"]
    truth, probs = _scored(tmp_path / "scored", classes, 40, label_values=lambda t: [float(v) for v in t])
    _rewrite(tmp_path / "scored", tmp_path / "missing", lambda table: table.__setitem__(
        "category", table["category"].where(table.index != 3, np.nan)))
    assert read_dataframe_directory(tmp_path / "missing")["category"].dtype == np.float64
    with caplog.at_level("WARNING"):
        (result,) = evaluate_model(tmp_path / "missing", tmp_path / "eval")
    kept = np.arange(40) != 3
    right = [classes[p] == str(int(t)) for p, t in zip(probs.argmax(axis=1)[kept], np.array(truth)[kept])]
    assert result["overall"]["Rows"] == 39
    assert result["overall"]["Overall Accuracy"] == pytest.approx(np.mean(right))
    assert sum(r["support"] for r in result["per_class"]) == 39
    assert any("1 row(s) without scores or label left out" in r.getMessage() for r in caplog.records)
    assert not any("not trained on" in r.getMessage() for r in caplog.records)


def test_probabilities_stored_as_text_read_as_numbers_and_an_empty_cell_as_unscored(tmp_path, caplog):
    classes = ["cat", "dog", "owl"]
    _scored(tmp_path / "scored", classes, 30)
    (expected,) = evaluate_model(tmp_path / "scored", tmp_path / "eval_numbers")

    def as_text(table):
        for c in classes:
            table[PROB + c] = [repr(v) for v in table[PROB + c]]
        table.loc[5, PROB + "dog"] = ""  # an image the other tool could not score

    _rewrite(tmp_path / "scored", tmp_path / "text", as_text)
    with caplog.at_level("WARNING"):
        (result,) = evaluate_model(tmp_path / "text", tmp_path / "eval")
    assert result["overall"]["Rows"] == 29
    assert any("stored as text" in r.getMessage() for r in caplog.records)
    assert any("1 row(s) without scores or label left out" in r.getMessage() for r in caplog.records)
    keep = [True] * 30
    keep[5] = False
    table = read_dataframe_directory(tmp_path / "scored")
    right = [t == classes[p] for t, p, k in zip(table["category"], table[[PROB + c for c in classes]].to_numpy()
                                                 .argmax(axis=1), keep) if k]
    assert result["overall"]["Overall Accuracy"] == pytest.approx(np.mean(right))
    assert expected["overall"]["Rows"] == 30


@pytest.mark.parametrize("cell, shown", [("n/a", "'n/a'"), ("0,25", "'0,25'"), (7.5, "7.5"), (-0.3, "-0.3"),
                                         (np.inf, "inf")])
def test_a_probability_that_is_not_one_is_refused_in_one_line(tmp_path, cell, shown):
    classes = ["cat", "dog", "owl"]
    _scored(tmp_path / "scored", classes, 12)

    def spoil(table):
        if isinstance(cell, str):
            table[PROB + "dog"] = table[PROB + "dog"].astype(str)
        table.loc[4, PROB + "dog"] = cell

    _rewrite(tmp_path / "scored", tmp_path / "bad", spoil)
    result = run_module("evaluate_model", "--scored_dataset", tmp_path / "bad", "--evaluation_results", tmp_path / "eval")
    _one_error_line(result, "error: scored_dataset:", f"'{PROB}dog' holds {shown} (row 4)", "not a probability")
    assert not (tmp_path / "eval").exists()


def test_labels_of_another_model_are_refused_in_one_line(tmp_path):
    """Scored by a model of other classes: no label is one of its classes, so every metric would be 0."""
    _scored(tmp_path / "scored", ["cat", "dog", "owl"], 12,
            label_values=lambda t: [["apple", "pear", "plum"][v] for v in t])
    with pytest.raises(UserError, match="none of the labels in column 'category'"):
        evaluate_model(tmp_path / "scored", tmp_path / "eval")
    result = run_module("evaluate_model", "--scored_dataset", tmp_path / "scored", "--evaluation_results", tmp_path / "eval")
    _one_error_line(result, "error: scored_dataset:", "apple, pear, plum", "cat, dog, owl")
    assert not (tmp_path / "eval").exists()


# --- item 8: Score Image Model with nothing to score, or a model that answers NaN ---------------------------------


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    """An (untrained-weights) resnet18 trained-model folder over classes a, b, c, and a labelled set to score."""
    from designer_resnet.models.create import create_untrained_model
    from designer_resnet.models.model_directory import read_untrained, write_trained
    from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model

    root = tmp_path_factory.mktemp("score")
    convert_train_valid(root, 2, 2)
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    untrained = read_untrained(root / "untrained")
    torch.manual_seed(0)
    for name, spoil in (("model", None), ("nan_model", float("nan"))):
        net = build_model("resnet18", 3, untrained.init_params)
        if spoil is not None:
            with torch.no_grad():
                net.fc.weight.fill_(spoil)
        (root / name).mkdir()
        write_trained(root / name, net, untrained, ["a", "b", "c"],
                      {"transforms": [], "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    return root


def test_scoring_a_set_without_one_readable_image_fails_in_one_line(model_and_images, tmp_path):
    from designer_resnet.directories.image_directory import ImageDirectory

    root = model_and_images
    shutil.copytree(root / "valid", tmp_path / "valid")
    directory = ImageDirectory.load(tmp_path / "valid")
    for row in directory.rows:
        directory.image_path(row).write_bytes(b"not an image")
    result = run_module("score_image_model", "--trained_model", root / "model", "--dataset", tmp_path / "valid",
                        "--scored_dataset", tmp_path / "scored")
    _one_error_line(result, "error: dataset: none of its 6 images could be read", "check that the folder")
    assert not (tmp_path / "scored").exists()


def test_a_model_that_outputs_nan_is_refused_by_score_and_the_predictor(model_and_images, tmp_path):
    from designer_resnet.inference import Predictor
    from designer_resnet.models.model_directory import read_trained

    root = model_and_images
    result = run_module("score_image_model", "--trained_model", root / "nan_model", "--dataset", root / "valid",
                        "--scored_dataset", tmp_path / "scored")
    _one_error_line(result, "error: trained_model: the model outputs NaN", "retrain")
    assert not (tmp_path / "scored").exists()
    # The served model answers through the same predictor.
    predictor = Predictor(read_trained(root / "nan_model"), device=torch.device("cpu"))
    image = Image.new("RGB", (32, 32), (120, 30, 200))
    with pytest.raises(UserError, match="the model outputs NaN"):
        predictor.predict([image])
    healthy = Predictor(read_trained(root / "model"), device=torch.device("cpu")).predict([image])
    assert np.isfinite(healthy).all()


def test_the_served_model_answers_a_nan_model_with_a_server_error_naming_it(model_and_images):
    """The model is at fault, not the request: an internal error (HTTP 500) carrying our one line, never NaN."""
    import base64
    import io

    import pandas as pd
    from mlflow.exceptions import MlflowException

    from designer_resnet.serving.pyfunc import ImageClassifier

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 30, 200)).save(buffer, format="PNG")
    request = pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode()]})
    with pytest.raises(MlflowException, match="the model outputs NaN") as refused:
        ImageClassifier(model_and_images / "nan_model").predict(None, request)
    assert refused.value.get_http_status_code() == 500
    answer = ImageClassifier(model_and_images / "model").predict(None, request)
    assert np.isfinite(np.array(answer["probs"].iloc[0])).all()
