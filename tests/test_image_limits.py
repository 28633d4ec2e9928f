"""Images whose size would cost gigabytes: thin images through Resize(<int>), files over Pillow's pixel limit.

A thin image (W x 1) through Resize(S) becomes (W*S) x S before any crop: a
192-byte 20000x1 PNG is 3.7 GiB at Resize 256. Every consumer of an op list
(Apply, Train, Score, the served model) must refuse it before the pixels are
made, and say which image. An image over Pillow's pixel limit listed in an
ImageDirectory must be one behaviour everywhere: Train names it in one line,
Apply and Score skip it by row id.

The tests watch every PIL resize: one asked for more pixels than the limit is
recorded and stopped before it allocates (so code without the limit fails here
fast instead of using gigabytes).
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.directories.transformation_directory import write_transformation_directory
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.scoring.score import score_image_model
from designer_resnet.training.train import TrainConfig, train
from designer_resnet.transforms.apply import apply_image_transformation
from designer_resnet.transforms.ops import image_pipeline, tensor_pipeline

from conftest import convert_train_valid, make_image

# Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS), the most pixels any image may have after an op.
LIMIT = 89_478_485
DEFAULT_OPS = [["Resize", 256], ["CenterCrop", 224]]


class Blowup(Exception):
    """A resize asked for more than LIMIT pixels (stopped before allocating them)."""


@pytest.fixture
def resizes(monkeypatch) -> list[tuple[int, int]]:
    """The output size of every PIL resize from now on, in order."""
    sizes: list[tuple[int, int]] = []
    real = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(tuple(size))
        if size[0] * size[1] > LIMIT:
            raise Blowup(f"a {size[0]}x{size[1]} intermediate image")
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return sizes


def largest(sizes) -> int:
    return max((w * h for w, h in sizes), default=0)


def thin_png(width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, 1), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def replace_image(directory: ImageDirectory, index: int, data: bytes) -> dict:
    """Overwrite the file of row `index` (its row keeps its listed size); returns the row."""
    row = directory.rows[index]
    directory.image_path(row).write_bytes(data)
    return row


def over_pillows_limit(path) -> None:
    """A PNG of 15000x12000 one-bit pixels (about 30 KB): more than twice Pillow's limit."""
    Image.new("1", (15000, 12000)).save(path, format="PNG")


@pytest.fixture
def three_images(tmp_path):
    """An ImageDirectory of two small images and a 20000x1 one (a 192-byte PNG), row ids 0, 1, 2."""
    make_image(tmp_path / "src" / "a" / "0.png", size=(40, 30))
    make_image(tmp_path / "src" / "a" / "1.png", size=(25, 50))
    (tmp_path / "src" / "b").mkdir()
    (tmp_path / "src" / "b" / "2.png").write_bytes(thin_png(20000))
    convert_to_image_directory(tmp_path / "src", tmp_path / "images")
    return tmp_path / "images"


# --- Item 1: thin images ------------------------------------------------------------------------------------------


def test_a_thin_image_is_refused_before_any_large_intermediate(resizes):
    """Both pipelines every consumer builds refuse a 20000x1 image at Resize 256, naming the sizes and the fix."""
    thin = Image.new("RGB", (20000, 1))
    for pipeline in (image_pipeline(DEFAULT_OPS), tensor_pipeline(DEFAULT_OPS)):
        with pytest.raises(ValueError, match=r"^a 20000x1 image would become 5120000x256 \(1,310,720,000 pixels\) "
                                             r"at Resize, over the limit of 89,478,485 pixels.*aspect ratio"):
            pipeline(thin)
    assert resizes == []  # refused from the header's size: no pixel was made
    assert tensor_pipeline(DEFAULT_OPS)(Image.new("RGB", (300, 1))).shape == (3, 224, 224)  # 76800x256: allowed


def test_the_limit_follows_each_op_and_lets_ordinary_photos_through():
    from designer_resnet.transforms.ops import MAX_PIXELS, ImageTooLarge, check_image_size

    assert MAX_PIXELS == LIMIT
    check_image_size([["Resize", 8192]], (4000, 3000))  # the largest Resize on a 4:3 photo: 10922x8192
    check_image_size([["Resize", [[8192, 8192]]]], (20000, 1))  # a [height, width] pair never exceeds it
    check_image_size([["Grayscale", {}]], (12000, 12000))  # Pillow reads up to twice the limit; not enlarged
    for ops, size in (([["Pad", 4096]], (8192, 8192)), ([["CenterCrop", 8192]], (80000, 1)),
                      ([["RandomRotation", {"degrees": 45, "expand": True}]], (20000, 1)),
                      ([["Resize", [[1, 100]]], ["Resize", 8192]], (10000, 10))):
        with pytest.raises(ImageTooLarge):
            check_image_size(ops, size)
    check_image_size([["RandomRotation", {"degrees": 45}]], (20000, 1))  # no expand: same size


def test_apply_skips_a_thin_image_by_id(three_images, tmp_path, resizes):
    write_transformation_directory(tmp_path / "tf", DEFAULT_OPS)
    report = apply_image_transformation(tmp_path / "tf", three_images, tmp_path / "out", mode="For inference")
    assert report.written == 2
    assert [row_id for row_id, _ in report.skipped] == [2]
    assert report.skipped[0][1].startswith("ImageTooLarge: a 20000x1 image would become 5120000x256")
    assert largest(resizes) <= LIMIT
    out = ImageDirectory.load(tmp_path / "out")
    assert [r["id"] for r in out.rows] == [0, 1] and all(out.open_image(r).size == (224, 224) for r in out.rows)


def test_score_reports_a_thin_image_like_an_unreadable_one(transformed_model, tmp_path, resizes):
    """The model's Resize 40 would make a 100000x1 image 4000000x40: its row is skipped by id, the rest scored."""
    shutil.copytree(transformed_model / "test", tmp_path / "test")
    thin = replace_image(ImageDirectory.load(tmp_path / "test"), 1, thin_png(100000))
    report = score_image_model(transformed_model / "model", tmp_path / "test", tmp_path / "scored", workers=0)
    assert [row_id for row_id, _ in report.failed] == [thin["id"]]
    assert report.failed[0][1].startswith("ImageTooLarge: a 100000x1 image would become 4000000x40")
    assert report.scored == 5
    assert largest(resizes) <= LIMIT


def test_served_model_answers_a_thin_image_with_a_400_naming_its_row(transformed_model, resizes):
    from mlflow.exceptions import MlflowException

    from designer_resnet.serving.pyfunc import ImageClassifier

    photo = ImageDirectory.load(transformed_model / "test")
    good = base64.b64encode(photo.image_path(photo.rows[0]).read_bytes()).decode("ascii")
    model = ImageClassifier(transformed_model / "model")
    request = pd.DataFrame({"image": [good, base64.b64encode(thin_png(100000)).decode("ascii")]})
    with pytest.raises(MlflowException) as caught:
        model.predict(None, request)
    assert caught.value.get_http_status_code() == 400
    assert caught.value.message.startswith("row 1: a 100000x1 image would become 4000000x40 (160,000,000 pixels)")
    assert "\n" not in caught.value.message
    assert largest(resizes) <= LIMIT
    assert len(model.predict(None, request.iloc[:1])) == 1  # the same model still answers a good request


def _trainable_sets(root):
    """Labelled train (4 per class) and valid (2 per class) ImageDirectories of 32x32 images, an untrained resnet18."""
    convert_train_valid(root, 4, 2)
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})


def _train_refusal(root, train_dir: str = "train", valid_dir: str = "valid") -> str:
    """The one line Train stops with (a UserError) on these sets; no model folder is written."""
    with pytest.raises(UserError) as caught:
        train(root / "untrained", root / train_dir, root / valid_dir, root / "out",
              TrainConfig(epochs=1, batch_size=4, learning_rate=0.01, workers=0))
    assert not (root / "out").exists()
    return str(caught.value)


def test_train_stops_on_a_thin_image_with_one_line_naming_it(tmp_path, resizes):
    """All ops deferred to training (a random op first): the loader meets Resize 64 on a 40000x1 image."""
    _trainable_sets(tmp_path)
    write_transformation_directory(tmp_path / "tf", [["RandomHorizontalFlip", {}], ["Resize", 64], ["CenterCrop", 56]])
    apply_image_transformation(tmp_path / "tf", tmp_path / "train", tmp_path / "train_tf", mode="For training")
    apply_image_transformation(tmp_path / "tf", tmp_path / "valid", tmp_path / "valid_tf", mode="For inference")
    directory = ImageDirectory.load(tmp_path / "train_tf")
    thin = replace_image(directory, 5, thin_png(40000))
    assert _train_refusal(tmp_path, "train_tf", "valid_tf").startswith(
        f"training_data: {directory.relative_path(thin)} (row id {thin['id']}): a 40000x1 image would become "
        "2560000x64 (163,840,000 pixels) at Resize")
    assert largest(resizes) <= LIMIT


# --- Item 14: an image over Pillow's pixel limit, listed in an ImageDirectory --------------------------------------


def _train_cli(path, out):
    return [sys.executable, "-m", "designer_resnet.components.train_pytorch_model",
            "--untrained_model", str(path / "untrained"), "--training_data", str(path / "train"),
            "--validation_data", str(path / "valid"), "--batch_size", "4", "--learning_rate", "0.01",
            "--epochs", "1", "--workers", "0", "--trained_model", str(out)]


def test_train_names_an_image_over_pillows_limit_in_one_line(tmp_path):
    _trainable_sets(tmp_path)
    directory = ImageDirectory.load(tmp_path / "train")
    bomb = directory.rows[3]
    over_pillows_limit(directory.image_path(bomb))
    result = subprocess.run(_train_cli(tmp_path, tmp_path / "out"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: training_data: {directory.relative_path(bomb)} (row id {bomb['id']}) cannot be read "
        "(DecompressionBombError: over Pillow's limit of 89,478,485 pixels); remove it, or rebuild the set with "
        "Convert to Image Directory, which skips unreadable files"]
    assert not (tmp_path / "out").exists()


def test_train_refuses_an_image_in_pillows_warning_range(tmp_path, monkeypatch):
    """Over the limit but under twice it Pillow only warns, and decodes: the reader refuses it all the same."""
    _trainable_sets(tmp_path)  # 32x32 images: 1024 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    directory = ImageDirectory.load(tmp_path / "valid")
    big = directory.rows[1]
    make_image(directory.image_path(big), size=(60, 40), fmt="PNG")  # 2400 pixels: over 2000, under twice it
    assert _train_refusal(tmp_path).startswith(
        f"validation_data: {directory.relative_path(big)} (row id {big['id']}) cannot be read "
        "(DecompressionBombWarning: over Pillow's limit of 2,000 pixels)")


def test_apply_skips_an_image_over_pillows_limit_by_id(three_images, tmp_path):
    directory = ImageDirectory.load(three_images)
    over_pillows_limit(directory.image_path(directory.rows[0]))
    write_transformation_directory(tmp_path / "tf", [["Resize", [[16, 16]]]])
    report = apply_image_transformation(tmp_path / "tf", three_images, tmp_path / "out", mode="For inference")
    assert [row_id for row_id, _ in report.skipped] == [0]
    assert report.skipped[0][1].startswith("DecompressionBombError: ")
    assert report.written == 2


def test_score_skips_an_image_in_pillows_warning_range(transformed_model, tmp_path, monkeypatch):
    """The test photos are at most 64x48 (3072 pixels); one of 80x60 is over a limit of 4000 but under twice it."""
    shutil.copytree(transformed_model / "test", tmp_path / "test")
    directory = ImageDirectory.load(tmp_path / "test")
    big = directory.rows[2]
    path = directory.image_path(big)
    make_image(path, size=(80, 60), fmt="JPEG" if path.suffix.lower() == ".jpg" else "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    report = score_image_model(transformed_model / "model", tmp_path / "test", tmp_path / "scored", workers=0)
    assert [row_id for row_id, _ in report.failed] == [big["id"]]
    assert report.failed[0][1].startswith("DecompressionBombWarning: ")
    assert report.scored == 5
