"""The `make demo` job on the built-in sample data."""

from __future__ import annotations

from collections import Counter

from designer_resnet import demo
from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory


def test_demo_runs_every_component_and_prints_accuracy(tmp_path, capsys):
    demo.main(["--runs-dir", str(tmp_path), "--epochs", "2"])
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    train = ImageDirectory.load(run / "split" / "train")
    valid = ImageDirectory.load(run / "split" / "validation")
    assert train.categories == valid.categories == [str(d) for d in range(10)]
    assert len(train) + len(valid) == 1797 and len(valid) == round(0.2 * 1797)
    share = Counter(valid.label(r) for r in valid.rows)
    assert all(30 <= share[str(d)] <= 40 for d in range(10))  # ~36 of each digit
    scored = read_dataframe_directory(run / "score_image_model")
    accuracy = (scored["category"] == scored["Scored Labels"]).mean()
    assert f"accuracy on the 359 validation images: {accuracy:.4f}" in out
    assert accuracy > 0.5  # two epochs from scratch; ten give 0.99 (tests/test_train.py)
    for path in ("evaluate_model/metrics.json", "evaluate_model/confusion_matrix.png", "score_image_model/_data.parquet"):
        assert (run / path).exists() and str((run / path).resolve()) in out
