"""The `make demo` job on the built-in sample data."""

from __future__ import annotations

from collections import Counter

from designer_resnet import demo
from designer_resnet.directories.image_directory import ImageDirectory


def test_demo_converts_and_splits_the_digits(tmp_path, capsys):
    demo.main(["--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    train = ImageDirectory.load(run / "split" / "train")
    valid = ImageDirectory.load(run / "split" / "validation")
    assert train.categories == valid.categories == [str(d) for d in range(10)]
    assert len(train) + len(valid) == 1797 and len(valid) == round(0.2 * 1797)
    share = Counter(valid.label(r) for r in valid.rows)
    assert all(30 <= share[str(d)] <= 40 for d in range(10))  # ~36 of each digit
    assert train.open_image(train.rows[0]).size == (32, 32)
    assert "Convert to Image Directory: 1797 images, 10 classes" in out and str(run.resolve()) in out
