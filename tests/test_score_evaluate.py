"""Score Image Model and Evaluate Model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.dataframe_directory import read_dataframe_directory, write_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError
from designer_resnet.evaluation.evaluate import evaluate_model
from designer_resnet.models.create import create_untrained_model
from designer_resnet.scoring.score import score_image_model
from designer_resnet.training.train import TrainConfig, train
from designer_resnet.transforms.ops import tensor_pipeline

from conftest import convert_train_valid, run_module, write_labelled_set

PROB = "Scored Probabilities_"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet18 trained 2 epochs on 3 generated classes, and labelled/unlabelled sets to score."""
    root = tmp_path_factory.mktemp("scoring")
    convert_train_valid(root, 8, 4)
    convert_to_image_directory(root / "raw_valid" / "b", root / "unlabelled")
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    result = train(root / "untrained", root / "train", root / "valid", root / "model",
                   TrainConfig(epochs=2, batch_size=8, learning_rate=0.01, workers=0))
    return root, result.model


def _expected_probs(model, directory: ImageDirectory) -> np.ndarray:
    from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD

    pipe = tensor_pipeline([["Normalize", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}]])
    batch = torch.stack([pipe(directory.open_image(r)) for r in directory.rows])
    with torch.no_grad():
        return torch.softmax(model.eval()(batch), dim=1).numpy()


def test_scoring_reproduces_the_in_memory_model(trained, tmp_path):
    root, model = trained
    report = score_image_model(root / "model", root / "valid", tmp_path / "scored", batch_size=5)
    df = read_dataframe_directory(tmp_path / "scored")
    valid = ImageDirectory.load(root / "valid")
    assert report.scored == 12 and report.failed == []
    assert list(df.columns) == ["id", "category", "Scored Labels", PROB + "a", PROB + "b", PROB + "c"]
    assert df["id"].tolist() == [r["id"] for r in valid.rows]  # input order kept
    assert df["category"].tolist() == [r["category"] for r in valid.rows]
    probs = df[[PROB + c for c in "abc"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    expected = _expected_probs(model, valid)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert df["Scored Labels"].tolist() == [["a", "b", "c"][i] for i in expected.argmax(axis=1)]
    meta = yaml.safe_load((tmp_path / "scored" / "_meta.yaml").read_text())
    assert meta["type"] == "DataFrameDirectory" and meta["extension"]["designer_resnet"]["label_column"] == "category"


def test_fast_uint8_path_equals_per_image_normalisation():
    from designer_resnet.inference import inference_pipeline

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    ops = [["Resize", [[16, 16]]], ["CenterCrop", 12]]
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    per_image, finish = inference_pipeline(ops, mean, std)
    fast = finish(torch.stack([per_image(i) for i in images]))
    general = torch.stack([tensor_pipeline(ops + [["Normalize", {"mean": mean, "std": std}]])(i) for i in images])
    assert fast.shape == (3, 3, 12, 12)
    torch.testing.assert_close(fast, general, atol=1e-5, rtol=1e-5)
    _, identity = inference_pipeline(ops + [["RandomErasing", {}]], mean, std)  # a tensor op: per-image path
    assert identity(fast) is fast


def test_unlabelled_columns(trained, tmp_path):
    root, _ = trained
    score_image_model(root / "model", root / "unlabelled", tmp_path / "scored")
    df = read_dataframe_directory(tmp_path / "scored")
    assert list(df.columns) == ["id", "Scored Labels", PROB + "a", PROB + "b", PROB + "c"]
    assert len(df) == 4


def test_unreadable_image_is_reported_by_id(trained, tmp_path):
    root, _ = trained
    import shutil

    shutil.copytree(root / "valid", tmp_path / "valid")
    d = ImageDirectory.load(tmp_path / "valid")
    broken = d.rows[2]
    d.image_path(broken).write_bytes(b"not an image any more")
    result = run_module("score_image_model", "--trained_model", root / "model", "--dataset", tmp_path / "valid",
                        "--scored_dataset", tmp_path / "scored")
    assert result.returncode == 0, result.stderr
    assert f"skipped image id {broken['id']}: UnidentifiedImageError" in result.stderr
    assert "scored 11 images (1 unreadable)" in result.stdout
    df = read_dataframe_directory(tmp_path / "scored")
    assert len(df) == 12
    bad = df[df["id"] == broken["id"]].iloc[0]
    assert pd.isna(bad["Scored Labels"]) and np.isnan(bad[PROB + "a"])


def test_untrained_model_cannot_score(trained, tmp_path):
    root, _ = trained
    result = run_module("score_image_model", "--trained_model", root / "untrained", "--dataset", root / "valid",
                        "--scored_dataset", tmp_path / "scored")
    assert result.returncode == 1
    assert "is an untrained model; train it with Train PyTorch Model first" in result.stderr
    assert not (tmp_path / "scored").exists()


def _hand_made_table(path, rng_seed=0, labelled=True):
    rng = np.random.default_rng(rng_seed)
    classes = ["cat", "dog", "fish", "owl"]
    n = 40
    logits = rng.normal(size=(n, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = [classes[i] for i in rng.integers(0, 4, n)]
    df = pd.DataFrame({"id": np.arange(n)})
    if labelled:
        df["category"] = truth
    df["Scored Labels"] = [classes[i] for i in probs.argmax(axis=1)]
    for i, c in enumerate(classes):
        df[PROB + c] = probs[:, i]
    write_dataframe_directory(path, df, extension={"designer_resnet": {"label_column": "category" if labelled else None}})
    return truth, probs, classes


def test_metrics_equal_scikit_learn(tmp_path):
    truth, probs, classes = _hand_made_table(tmp_path / "scored")
    (result,) = evaluate_model(tmp_path / "scored", tmp_path / "eval")
    pred = [classes[i] for i in probs.argmax(axis=1)]
    o = result["overall"]
    assert o["Overall Accuracy"] == pytest.approx(accuracy_score(truth, pred))
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(truth, pred, labels=classes, average=avg, zero_division=0)
        assert (o[f"{avg.title()} Precision"], o[f"{avg.title()} Recall"], o[f"{avg.title()} F1"]) == pytest.approx((p, r, f))
    assert o["Log Loss"] == pytest.approx(log_loss(truth, probs, labels=classes))
    assert o["Top-3 Accuracy"] == pytest.approx(top_k_accuracy_score(truth, probs, k=3, labels=classes))
    assert o["Top-1 Accuracy"] == pytest.approx(o["Overall Accuracy"])
    assert "Top-5 Accuracy" not in o  # only 4 classes
    cm = confusion_matrix(truth, pred, labels=classes)
    assert result["confusion_matrix"]["counts"] == cm.tolist()
    one_vs_rest = [np.mean((np.array(truth) == c) == (np.array(pred) == c)) for c in classes]
    assert o["Average Accuracy"] == pytest.approx(np.mean(one_vs_rest))
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=classes, zero_division=0)
    assert [row["f1"] for row in result["per_class"]] == pytest.approx(list(f))
    assert [row["support"] for row in result["per_class"]] == list(s)

    table = read_dataframe_directory(tmp_path / "eval")
    assert table["Dataset"].tolist() == ["Scored dataset"]
    assert table["Overall Accuracy"].iloc[0] == pytest.approx(o["Overall Accuracy"])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["Scored dataset"]["overall"]["Log Loss"] == pytest.approx(o["Log Loss"])
    for png in ("confusion_matrix.png", "per_class_metrics.png"):
        with Image.open(tmp_path / "eval" / png) as img:
            img.verify()
            assert img.format == "PNG"


def test_two_scored_inputs_side_by_side(tmp_path, monkeypatch):
    # A tracking server, as on Azure ML (a local one here): the metrics go to its run.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'tracking.db'}")
    _hand_made_table(tmp_path / "a", rng_seed=0)
    _hand_made_table(tmp_path / "b", rng_seed=1)
    result = run_module("evaluate_model", "--scored_dataset", tmp_path / "a", "--scored_dataset_to_compare", tmp_path / "b",
                        "--evaluation_results", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    table = read_dataframe_directory(tmp_path / "eval")
    assert table["Dataset"].tolist() == ["Scored dataset", "Scored dataset to compare"]
    assert table["Overall Accuracy"].iloc[0] != table["Overall Accuracy"].iloc[1]
    assert (tmp_path / "eval" / "confusion_matrix_to_compare.png").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'tracking.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.metrics["overall_accuracy"] == pytest.approx(table["Overall Accuracy"].iloc[0])
    assert run.data.metrics["compare_overall_accuracy"] == pytest.approx(table["Overall Accuracy"].iloc[1])


def test_unlabelled_scored_data_cannot_be_evaluated(tmp_path):
    _hand_made_table(tmp_path / "scored", labelled=False)
    with pytest.raises(UserError, match="evaluation needs labelled data"):
        evaluate_model(tmp_path / "scored", tmp_path / "eval")
    result = run_module("evaluate_model", "--scored_dataset", tmp_path / "scored", "--evaluation_results", tmp_path / "eval")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()


def test_end_to_end_scored_model_evaluates(trained, tmp_path):
    root, _ = trained
    score_image_model(root / "model", root / "valid", tmp_path / "scored")
    (result,) = evaluate_model(tmp_path / "scored", tmp_path / "eval")
    df = read_dataframe_directory(tmp_path / "scored")
    assert result["overall"]["Overall Accuracy"] == pytest.approx(np.mean(df["category"] == df["Scored Labels"]))
    assert result["overall"]["Rows"] == 12


# What the designer's built-in Evaluate Model checks of a scored DataFrameDirectory.
_ARROW_TYPE_NAMES = {"int64": "int64", "double": "float64", "string": "str", "large_string": "str", "bool": "bool"}


def _assert_designer_loadable(path):
    """All four schema keys; one attribute per parquet column, in order, with the stored type and nullability."""
    import pyarrow.parquet as pq

    meta = yaml.safe_load((path / "_meta.yaml").read_text())
    assert (meta["type"], meta["format"]) == ("DataFrameDirectory", "Parquet")
    schema = json.loads((path / meta["schema"]).read_text())
    assert {"columnAttributes", "featureChannels", "labelColumns", "scoreColumns"} <= set(schema)
    stored = pq.read_schema(path / meta["data"])
    df = pd.read_parquet(path / meta["data"])
    attributes = schema["columnAttributes"]
    assert [a["name"] for a in attributes] == stored.names
    for attribute, field in zip(attributes, stored):
        assert attribute["elementType"]["typeName"] == _ARROW_TYPE_NAMES[str(field.type)], field.name
        assert attribute["type"] == ("String" if attribute["elementType"]["typeName"] == "str" else "Numeric")
        assert attribute["elementType"]["isNullable"] == bool(df[field.name].isna().any()), field.name
    roles = set(schema["labelColumns"].values()) | set(schema["scoreColumns"].values())
    assert roles <= set(stored.names)
    for attribute in attributes:
        assert attribute["isFeature"] == (attribute["name"] not in roles), attribute["name"]
    return schema


def test_labelled_scored_output_has_the_designer_schema(trained, tmp_path):
    root, _ = trained
    import shutil

    shutil.copytree(root / "valid", tmp_path / "valid")
    d = ImageDirectory.load(tmp_path / "valid")
    d.image_path(d.rows[2]).write_bytes(b"not an image any more")  # a row with no label and NaN scores
    score_image_model(root / "model", tmp_path / "valid", tmp_path / "scored")
    schema = _assert_designer_loadable(tmp_path / "scored")
    assert [a["name"] for a in schema["columnAttributes"]] == ["id", "category", "Scored Labels",
                                                               PROB + "a", PROB + "b", PROB + "c"]
    nullable = {a["name"]: a["elementType"]["isNullable"] for a in schema["columnAttributes"]}
    assert nullable == {"id": False, "category": False, "Scored Labels": True,
                        PROB + "a": True, PROB + "b": True, PROB + "c": True}
    assert schema["featureChannels"] == []
    assert schema["labelColumns"] == {"True Labels": "category"}
    assert schema["scoreColumns"] == {"Multi Class Assigned Labels": "Scored Labels",
                                      **{PROB + c: PROB + c for c in "abc"}}
    assert [a["isFeature"] for a in schema["columnAttributes"]] == [True] + [False] * 5
    # Our Evaluate Model's own table is a DataFrameDirectory too.
    evaluate_model(tmp_path / "scored", tmp_path / "eval")
    _assert_designer_loadable(tmp_path / "eval")


def test_unlabelled_scored_output_has_the_designer_schema(trained, tmp_path):
    root, _ = trained
    score_image_model(root / "model", root / "unlabelled", tmp_path / "scored")
    schema = _assert_designer_loadable(tmp_path / "scored")
    assert schema["labelColumns"] == {}
    assert schema["scoreColumns"] == {"Multi Class Assigned Labels": "Scored Labels",
                                      **{PROB + c: PROB + c for c in "abc"}}


def _builtin_scored_folder(path, label: str, rng_seed=3):
    """A scored folder laid out exactly as the built-in Score Image Model writes it (no `extension` of ours)."""
    rng = np.random.default_rng(rng_seed)
    classes = ["circle", "cross", "square"]
    n = 30
    logits = rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = [classes[i] for i in rng.integers(0, 3, n)]
    df = pd.DataFrame({label: truth, "id": np.arange(n, dtype=np.int64)})
    for i, c in enumerate(classes):
        df[PROB + c] = probs[:, i]
    df["Scored Labels"] = [classes[i] for i in probs.argmax(axis=1)]
    path.mkdir(parents=True)
    df.to_parquet(path / "_data.parquet", index=False)

    def attribute(name, kind, type_name, feature=False):
        return {"name": name, "type": kind, "isFeature": feature,
                "elementType": {"typeName": type_name, "isNullable": False}}

    schema = {
        "columnAttributes": [attribute(label, "String", "str"), attribute("id", "Numeric", "int64", True),
                             *[attribute(PROB + c, "Numeric", "float64") for c in classes],
                             attribute("Scored Labels", "String", "str")],
        "featureChannels": [],
        "labelColumns": {"True Labels": label},
        "scoreColumns": {**{PROB + c: PROB + c for c in classes}, "Multi Class Assigned Labels": "Scored Labels"},
    }
    (path / "schema").mkdir()
    (path / "schema" / "_schema.json").write_text(json.dumps(schema))
    (path / "_meta.yaml").write_text(yaml.safe_dump({
        "type": "DataFrameDirectory", "visualization": [{"type": "Visualization", "path": "_data.visualization"}],
        "extension": {}, "format": "Parquet", "data": "_data.parquet", "samples": "_samples.json",
        "schema": "schema/_schema.json"}, sort_keys=False))
    return truth, probs, classes


@pytest.mark.parametrize("label", ["category", "shape"])  # the label column is whatever the ImageDirectory named it
def test_evaluates_the_builtin_score_output(tmp_path, label):
    truth, probs, classes = _builtin_scored_folder(tmp_path / "scored", label)
    (result,) = evaluate_model(tmp_path / "scored", tmp_path / "eval")
    pred = [classes[i] for i in probs.argmax(axis=1)]
    assert result["overall"]["Overall Accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert result["overall"]["Rows"] == 30
    assert result["confusion_matrix"]["labels"] == classes


def test_evaluate_writes_nothing_under_home_or_the_working_directory(tmp_path):
    """matplotlib's config and font cache stay out of ~/.config and ~/.cache; no MLflow files anywhere."""
    import subprocess
    import sys

    from conftest import user_environment

    _hand_made_table(tmp_path / "scored")
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    result = subprocess.run([sys.executable, "-m", "designer_resnet.components.evaluate_model", "--scored_dataset",
                             str(tmp_path / "scored"), "--evaluation_results", str(tmp_path / "eval")],
                            cwd=cwd, env=user_environment(home), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "eval" / "confusion_matrix.png").exists() and not (tmp_path / "eval" / "mlflow.db").exists()


def test_an_image_of_another_size_does_not_sink_its_batch(trained, tmp_path):
    """One 48x48 image among 32x32 ones: every image is scored, by the model's size fix or, without one, in its own group."""
    root, _ = trained
    write_labelled_set(tmp_path / "raw", 4, seed=3)
    odd = sorted((tmp_path / "raw" / "a").iterdir())[0]
    Image.open(odd).resize((48, 48)).save(odd)
    convert_to_image_directory(tmp_path / "raw", tmp_path / "mixed")
    report = score_image_model(root / "model", tmp_path / "mixed", tmp_path / "scored", workers=0)
    assert report.scored == 12 and report.failed == []
    # A model that fixes no size (as the built-in Train's): images of each size go through in their own group.
    shutil.copytree(root / "model", tmp_path / "no_size_fix")
    spec_path = tmp_path / "no_size_fix" / "model_spec.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["designer_resnet"]["preprocess"]["transforms"] = []
    spec_path.write_text(yaml.safe_dump(spec))
    report = score_image_model(tmp_path / "no_size_fix", tmp_path / "mixed", tmp_path / "scored2", workers=0)
    assert report.scored == 12 and report.failed == []
    assert not read_dataframe_directory(tmp_path / "scored2").isna().any().any()


def test_labels_the_model_does_not_know_count_as_wrong_with_one_warning(tmp_path, caplog):
    from designer_resnet.directories.dataframe_directory import read_dataframe_schema

    _hand_made_table(tmp_path / "scored")
    table = read_dataframe_directory(tmp_path / "scored")
    table.loc[0:4, "category"] = "zebra"  # a class the model never saw
    write_dataframe_directory(tmp_path / "zebra", table, label_column="category",
                              score_columns=read_dataframe_schema(tmp_path / "scored")["scoreColumns"])
    with caplog.at_level("WARNING"):
        (result,) = evaluate_model(tmp_path / "zebra", tmp_path / "eval")
    warnings = [r.getMessage() for r in caplog.records if "not trained on" in r.getMessage()]
    assert len(warnings) == 1 and "5 row(s)" in warnings[0] and "zebra" in warnings[0]
    predicted = table[[c for c in table.columns if c.startswith("Scored Probabilities_")]].to_numpy().argmax(axis=1)
    right = sum(t == ["cat", "dog", "fish", "owl"][p] for t, p in zip(table["category"], predicted))
    assert result["overall"]["Overall Accuracy"] == pytest.approx(right / len(table))
