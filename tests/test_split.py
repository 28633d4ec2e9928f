"""Split Image Directory: stratified, seeded, and strict about its fraction."""

from __future__ import annotations

from collections import Counter

import pytest

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.data.split import split_image_directory, split_indices
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError

from conftest import make_image, run_module


def test_stratified_split_keeps_class_proportions():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    first, second = split_indices(labels, 0.8, seed=42)
    assert len(first) == 80 and len(second) == 20
    assert sorted(first + second) == list(range(100))
    assert Counter(labels[i] for i in first) == {"a": 48, "b": 24, "c": 8}
    assert Counter(labels[i] for i in second) == {"a": 12, "b": 6, "c": 2}


def test_uneven_classes_round_to_the_requested_total():
    labels = ["a"] * 7 + ["b"] * 5 + ["c"] * 3
    first, _ = split_indices(labels, 0.5, seed=1)
    counts = Counter(labels[i] for i in first)
    assert len(first) == round(0.5 * 15)
    for k, n in Counter(labels).items():
        assert abs(counts[k] - 0.5 * n) < 1


def test_split_is_deterministic_and_seeded():
    labels = ["a", "b"] * 50
    assert split_indices(labels, 0.7, 42) == split_indices(labels, 0.7, 42)
    assert split_indices(labels, 0.7, 42) != split_indices(labels, 0.7, 43)


def test_unlabelled_split():
    first, second = split_indices([None] * 10, 0.9, 42)
    assert len(first) == 9 and len(second) == 1


@pytest.mark.parametrize("n,fraction", [(10, 0.05), (10, 0.95), (10, 0.0), (10, 1.0), (2, 0.6)])
def test_fraction_outside_valid_range_names_the_range(n, fraction):
    with pytest.raises(UserError, match=r"fraction: .* outside the valid range \[0\.1, 0\.9\]|outside the valid range \[0\.5, 0\.5\]"):
        split_indices(["a"] * n, fraction, 42)


def test_fewer_than_two_images_is_an_error():
    with pytest.raises(UserError, match="at least 2 images"):
        split_indices(["a"], 0.5, 42)


def test_split_directories_keep_categories_rows_and_files(labelled_folder, tmp_path):
    convert_to_image_directory(labelled_folder, tmp_path / "all")
    n1, n2 = split_image_directory(tmp_path / "all", tmp_path / "train", tmp_path / "valid", fraction=0.75, seed=3)
    assert (n1, n2) == (9, 3)
    train, valid = ImageDirectory.load(tmp_path / "train"), ImageDirectory.load(tmp_path / "valid")
    assert train.categories == valid.categories == ["cat", "dog", "fish"]
    assert Counter(train.label(r) for r in train.rows) == {"cat": 3, "dog": 3, "fish": 3}
    assert {r["id"] for r in train.rows}.isdisjoint({r["id"] for r in valid.rows})
    original = {r["id"]: r for r in ImageDirectory.load(tmp_path / "all").rows}
    for d in (train, valid):
        for r in d.rows:
            assert r == original[r["id"]]
            assert d.image_path(r).exists()


def test_split_cli_bad_fraction_exits_1_and_writes_nothing(tmp_path):
    for i in range(3):
        make_image(tmp_path / "src" / f"{i}.png")
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    result = run_module("split_image_directory", "--input_path", tmp_path / "src", "--fraction", "0.1",
                        "--output_path1", out1, "--output_path2", out2)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: fraction: 0.1 is outside the valid range [0.333333, 0.666667] "
                                     "for 3 images (each output needs at least one)")
    assert not out1.exists() and not out2.exists()
    result = run_module("split_image_directory", "--input_path", tmp_path / "src", "--fraction", "1.5",
                        "--output_path1", out1, "--output_path2", out2)
    assert result.returncode == 1 and "outside the valid range [0.0, 1.0]" in result.stderr


def test_listed_image_missing_or_corrupt(labelled_folder, tmp_path):
    """A listed file that is gone: one line, exit 1, nothing written. A corrupt one is copied as it is
    (Split does not decode images) and does not break the preview."""
    convert_to_image_directory(labelled_folder, tmp_path / "images")
    files = sorted((tmp_path / "images" / "image").iterdir())
    files[1].write_bytes(b"not an image")
    split_image_directory(tmp_path / "images", tmp_path / "p1", tmp_path / "p2", fraction=0.5, seed=1)
    assert len(ImageDirectory.load(tmp_path / "p1")) + len(ImageDirectory.load(tmp_path / "p2")) == 12
    files[0].unlink()
    result = run_module("split_image_directory", "--input_path", tmp_path / "images", "--fraction", "0.5",
                        "--output_path1", tmp_path / "q1", "--output_path2", tmp_path / "q2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: input_path: {files[0].relative_to(tmp_path / 'images')} (row id 0) is listed but missing from "
        f"{tmp_path / 'images'}; recreate the ImageDirectory with Convert to Image Directory"]
    assert not (tmp_path / "q1").exists() and not (tmp_path / "q2").exists()
