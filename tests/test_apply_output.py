"""What Apply Image Transformation writes: the input's own bytes when no op changes a file, JPEG for a changed
JPEG (PNG with `lossless`), PNG for the rest; the rows and the ledger say what the files hold."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from designer_resnet.component_source import defaults, parameters
from designer_resnet.components.apply_image_transformation import main as apply_main
from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.directories.transformation_directory import write_transformation_directory
from designer_resnet.transforms.apply import JPEG_QUALITY, apply_image_transformation
from designer_resnet.transforms.ledger import Ledger
from designer_resnet.transforms.ops import tensor_pipeline

from conftest import make_image, write_labelled_set

RESIZE = [["Resize", [[12, 10]]]]  # to 10 wide, 12 high


def _files_by_id(directory: ImageDirectory) -> dict[int, tuple[str, bytes]]:
    return {row["id"]: (directory.relative_path(row), directory.image_path(row).read_bytes()) for row in directory.rows}


def _formats(directory: ImageDirectory) -> dict[str, str]:
    """file name -> the format Pillow reads from its bytes."""
    formats = {}
    for row in directory.rows:
        with Image.open(directory.image_path(row)) as img:
            formats[directory.relative_path(row)] = img.format
    return formats


def _apply(tmp_path, ops, source, name="out", **options) -> ImageDirectory:
    write_transformation_directory(tmp_path / f"tf_{name}", ops)
    apply_image_transformation(tmp_path / f"tf_{name}", source, tmp_path / name, **options)
    return ImageDirectory.load(tmp_path / name)


@pytest.fixture
def mixed_set(labelled_folder, tmp_path):
    """Convert of the labelled folder: 12 images 20x16, PNG (.png) and JPEG (.jpg) alternating in each class."""
    convert_to_image_directory(labelled_folder, tmp_path / "mixed")
    return tmp_path / "mixed"


@pytest.mark.parametrize("ops", [[["RandomResizedCrop", 8], ["RandomHorizontalFlip", {}]],
                                 [["RandomHorizontalFlip", {"p": 1.0}]]])
def test_random_only_chain_for_training_keeps_every_file_byte_for_byte(mixed_set, tmp_path, ops):
    source = ImageDirectory.load(mixed_set)
    out = _apply(tmp_path, ops, mixed_set, mode="For training")
    before, after = _files_by_id(source), _files_by_id(out)
    assert after.keys() == before.keys()
    for row_id, (name, data) in after.items():
        assert data == before[row_id][1], name
        assert name.rsplit(".", 1)[1] == before[row_id][0].rsplit(".", 1)[1]
    assert {name.rsplit(".", 1)[1] for name, _ in after.values()} == {"png", "jpg"}
    assert all((r["image_info"]["width"], r["image_info"]["height"]) == (20, 16) for r in out.rows)
    ledger = Ledger(out.extension)
    assert ledger.applied == [] and ledger.pending == ops  # kept bytes: nothing written into them
    # What Train does with each image: read it and draw the pending ops.
    size = (3, 8, 8) if ops[0][0] == "RandomResizedCrop" else (3, 16, 20)
    assert all(tensor_pipeline(ledger.pending)(out.open_image(r)).shape == size for r in out.rows)


def test_resize_writes_jpeg_for_jpeg_and_png_for_the_rest(flat_folder, tmp_path):
    """flat_folder: three .png, two .jpeg and a .bmp, 20x16 each."""
    out = _apply(tmp_path, RESIZE, flat_folder, mode="For inference")
    formats = _formats(out)
    assert sorted(formats.values()) == ["JPEG"] * 2 + ["PNG"] * 4
    assert all(name.endswith(".jpg" if fmt == "JPEG" else ".png") for name, fmt in formats.items())
    assert all((r["image_info"]["width"], r["image_info"]["height"]) == (10, 12) for r in out.rows)
    assert all(out.open_image(r).size == (10, 12) for r in out.rows)
    assert Ledger(out.extension).applied == RESIZE


def test_a_resized_jpeg_is_written_at_the_stated_quality(tmp_path):
    make_image(tmp_path / "photos" / "a.jpg", size=(40, 30), fmt="JPEG")
    out = _apply(tmp_path, RESIZE, tmp_path / "photos", mode="For inference")
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, format="JPEG", quality=JPEG_QUALITY)
    with Image.open(out.image_path(out.rows[0])) as written, Image.open(reference) as expected:
        assert written.format == "JPEG" and written.quantization == expected.quantization
        assert JpegImagePlugin.get_sampling(written) == 2  # 4:2:0
        jpeg = np.asarray(written.convert("RGB"), dtype=float)
    exact = _apply(tmp_path, RESIZE, tmp_path / "photos", name="exact", mode="For inference", lossless=True)
    assert _formats(exact) == {"image/0_0.png": "PNG"}
    assert np.abs(jpeg - np.asarray(exact.open_image(exact.rows[0]), dtype=float)).mean() < 3
    assert f"quality {JPEG_QUALITY}" in " ".join(parameters("apply_image_transformation")["lossless"]["description"]
                                                 .split())


def test_each_resized_image_keeps_its_own_format_in_a_mixed_set(mixed_set, tmp_path):
    source = _formats(ImageDirectory.load(mixed_set))
    out = _apply(tmp_path, RESIZE, mixed_set, mode="For training")
    assert _formats(out) == source  # same names (suffixes) as Convert gave them, same formats
    assert sorted(set(source.values())) == ["JPEG", "PNG"]
    assert all((r["image_info"]["width"], r["image_info"]["height"]) == (10, 12) for r in out.rows)
    assert Ledger(out.extension).applied == RESIZE


def test_an_unreadable_file_is_skipped_while_the_others_keep_their_bytes(tmp_path):
    make_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    make_image(tmp_path / "photos" / "c.png")
    (tmp_path / "photos" / "b.jpg").write_bytes(b"not an image at all")
    write_transformation_directory(tmp_path / "tf", [["RandomHorizontalFlip", {}]])
    report = apply_image_transformation(tmp_path / "tf", tmp_path / "photos", tmp_path / "out", mode="For training")
    assert [row_id for row_id, _ in report.skipped] == [1]
    assert report.skipped[0][1].startswith("UnidentifiedImageError: ")
    out = ImageDirectory.load(tmp_path / "out")
    assert [(r["id"], r["image_info"]["file_name"]) for r in out.rows] == [(0, "image/0_0.jpg"), (2, "image/0_2.png")]
    assert out.image_path(out.rows[0]).read_bytes() == (tmp_path / "photos" / "a.jpg").read_bytes()
    assert out.image_path(out.rows[1]).read_bytes() == (tmp_path / "photos" / "c.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "out" / "image").iterdir()) == ["0_0.jpg", "0_2.png"]


@pytest.mark.parametrize("flag, written", [(None, "JPEG"), ("false", "JPEG"), ("true", "PNG")])
def test_entry_module_takes_lossless(tmp_path, flag, written):
    make_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    write_transformation_directory(tmp_path / "tf", RESIZE)
    apply_main(["--input_transformation_path", str(tmp_path / "tf"), "--input_image_path", str(tmp_path / "photos"),
                "--output_path", str(tmp_path / "out"), *(["--lossless", flag] if flag else [])])
    assert list(_formats(ImageDirectory.load(tmp_path / "out")).values()) == [written]
    assert defaults("apply_image_transformation")["lossless"] is False
