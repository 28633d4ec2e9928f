"""The `make demo` job: the pipeline YAML on the built-in digits, through the local runner."""

from __future__ import annotations

from designer_resnet import demo
from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory


def test_demo_runs_the_pipeline_and_prints_accuracy(tmp_path, capsys):
    demo.main(["--runs-dir", str(tmp_path), "--epochs", "1"])
    out = capsys.readouterr().out
    (run,) = [p for p in tmp_path.iterdir() if p.name != "sample_digits" and p.is_dir()]
    train = ImageDirectory.load(run / "split" / "output_path1")
    valid = ImageDirectory.load(run / "split" / "output_path2")
    assert train.categories == valid.categories == [str(d) for d in range(10)]
    assert len(train) + len(valid) == 1797 - 360
    scored = read_dataframe_directory(run / "score" / "scored_dataset")
    accuracy = (scored["category"] == scored["Scored Labels"]).mean()
    assert len(scored) == 360 and f"accuracy on the 360 held-out test images: {accuracy:.4f}" in out
    assert accuracy > 0.5  # one epoch from scratch; ten reach 0.99 (tests/test_train.py)
    for path in ("evaluate/evaluation_results/metrics.json", "evaluate/evaluation_results/confusion_matrix.png",
                 "score/scored_dataset/_data.parquet"):
        assert (run / path).exists() and str(run / path) in out
    assert "[10/10] evaluate: ok" in out
