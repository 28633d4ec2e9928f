"""Init and Apply Image Transformation."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from designer_resnet.components import init_image_transformation
from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.directories.meta import write_meta
from designer_resnet.directories.transformation_directory import (
    read_transformation_directory,
    write_transformation_directory,
)
from designer_resnet.errors import UserError
from designer_resnet.transforms.apply import apply_image_transformation, read_transformation
from designer_resnet.transforms.ledger import Ledger
from designer_resnet.transforms.ops import designer_ops, plan, tensor_pipeline, validate_ops, without_random

from conftest import make_image, run_module


def test_designer_defaults():
    assert designer_ops() == [["Resize", 256], ["CenterCrop", 224], ["RandomHorizontalFlip", {}]]


def test_init_writes_transformation_directory(tmp_path):
    init_image_transformation.main(["--output_path", str(tmp_path / "t"), "--resize", "False", "--center_crop", "true",
                                    "--crop_size", "12", "--random_rotation", "TRUE", "--random_rotation_degrees", "30",
                                    "--random_horizontal_flip", "0", "--pad", "1", "--padding", "2"])
    meta = yaml.safe_load((tmp_path / "t" / "_meta.yaml").read_text())
    assert meta == {"type": "TransformationDirectory", "transform_type": "Image"}
    ops = json.loads((tmp_path / "t" / "_transforms.json").read_text())
    assert ops == [["CenterCrop", 12], ["Pad", 2], ["RandomRotation", 30]]


def test_transformation_round_trip(tmp_path):
    ops = [["Resize", [[10, 12]]], ["ColorJitter", {"brightness": 0.2}], ["Normalize", {"mean": [0.5] * 3, "std": [0.2] * 3}]]
    write_transformation_directory(tmp_path, ops)
    assert read_transformation_directory(tmp_path) == ops


def test_unknown_and_malformed_ops_are_refused(tmp_path):
    write_transformation_directory(tmp_path, [["Resize", 8], ["Lambda", {}]])
    with pytest.raises(UserError, match="unknown transform 'Lambda'"):
        read_transformation(tmp_path)
    with pytest.raises(UserError, match="Resize does not accept"):
        validate_ops([["Resize", {"sise": 3}]])
    with pytest.raises(UserError, match="is not an \\[op, args\\] pair"):
        validate_ops([42])


def test_inference_keeps_every_op_but_the_random_ones():
    """A pending Normalize (or ToTensor) belongs to inference as much as a Resize does."""
    normalize = ["Normalize", {"mean": [0.5] * 3, "std": [0.2] * 3}]
    ops = [["Resize", 8], ["RandomCrop", 6], ["ToTensor", {}], ["RandomErasing", {}], normalize]
    assert without_random(ops) == [["Resize", 8], ["ToTensor", {}], normalize]


def test_plan_defers_from_the_first_random_op():
    ops = [["Resize", 8], ["RandomCrop", 6], ["CenterCrop", 4], ["Normalize", {"mean": [0] * 3, "std": [1] * 3}]]
    assert plan(ops, "training") == (ops[:1], ops[1:])
    # Inference drops the random crop; the centre crop can then be written too.
    assert plan(ops, "inference") == ([["Resize", 8], ["CenterCrop", 4]], [ops[3]])


@pytest.fixture
def image_dir(tmp_path):
    for i, size in enumerate([(40, 30), (25, 50), (64, 64)]):
        make_image(tmp_path / "src" / ("a" if i < 2 else "b") / f"{i}.png", size=size)
    convert_to_image_directory(tmp_path / "src", tmp_path / "images")
    return tmp_path / "images"


def test_inference_mode_writes_images_of_the_implied_size(image_dir, tmp_path):
    write_transformation_directory(tmp_path / "t", designer_ops(size=20, crop_size=16, random_rotation=True,
                                                                random_rotation_degrees=10))
    report = apply_image_transformation(tmp_path / "t", image_dir, tmp_path / "out", mode="For inference")
    assert report.written == 3 and report.deferred == []
    out = ImageDirectory.load(tmp_path / "out")
    assert out.categories == ["a", "b"]
    for row in out.rows:
        assert out.open_image(row).size == (16, 16)
        assert (row["image_info"]["width"], row["image_info"]["height"]) == (16, 16)
    assert Ledger(out.extension).pending == []


def test_training_mode_records_random_ops_for_every_epoch(image_dir, tmp_path):
    write_transformation_directory(tmp_path / "t", [["Resize", [[12, 14]]], ["RandomHorizontalFlip", {"p": 1.0}],
                                                    ["CenterCrop", 10]])
    report = apply_image_transformation(tmp_path / "t", image_dir, tmp_path / "out", mode="For training")
    assert report.applied == [["Resize", [[12, 14]]]]
    out = ImageDirectory.load(tmp_path / "out")
    assert all(out.open_image(r).size == (14, 12) for r in out.rows)
    pending = Ledger(out.extension).pending
    assert pending == [["RandomHorizontalFlip", {"p": 1.0}], ["CenterCrop", 10]]
    tensor = tensor_pipeline(pending)(out.open_image(out.rows[0]))
    assert tensor.shape == (3, 10, 10)


def test_applying_twice_keeps_the_deferred_order(image_dir, tmp_path):
    write_transformation_directory(tmp_path / "t1", [["RandomHorizontalFlip", {}]])
    write_transformation_directory(tmp_path / "t2", [["Resize", [[8, 8]]]])
    apply_image_transformation(tmp_path / "t1", image_dir, tmp_path / "o1", mode="For training")
    apply_image_transformation(tmp_path / "t2", tmp_path / "o1", tmp_path / "o2", mode="For training")
    out = ImageDirectory.load(tmp_path / "o2")
    # The flip must still come before the resize, so the resize is deferred too.
    assert Ledger(out.extension).pending == [["RandomHorizontalFlip", {}], ["Resize", [[8, 8]]]]
    apply_image_transformation(tmp_path / "t2", tmp_path / "o1", tmp_path / "o3", mode="For inference")
    inferred = ImageDirectory.load(tmp_path / "o3")
    assert Ledger(inferred.extension).pending == [] and inferred.open_image(inferred.rows[0]).size == (8, 8)


def test_tensor_pipeline_puts_to_tensor_before_tensor_ops():
    from PIL import Image

    img = Image.new("RGB", (4, 4), (255, 0, 0))
    out = tensor_pipeline([["Normalize", {"mean": [0.5] * 3, "std": [0.5] * 3}]])(img)
    assert torch.allclose(out[0], torch.ones(4, 4)) and torch.allclose(out[1], -torch.ones(4, 4))


def test_wrong_port_connected_to_apply(image_dir, tmp_path):
    (tmp_path / "model").mkdir()
    write_meta(tmp_path / "model", {"type": "ModelDirectory"})
    result = run_module("apply_image_transformation", "--input_transformation_path", tmp_path / "model",
                        "--input_image_path", image_dir, "--output_path", tmp_path / "out")
    assert result.returncode == 1
    assert "input_transformation_path: expected TransformationDirectory but" in result.stderr
    assert "is a ModelDirectory" in result.stderr and not (tmp_path / "out").exists()


def test_apply_refuses_an_unknown_op_in_one_line(image_dir, tmp_path):
    """The TransformationDirectory reader only reads the file; Apply is where its ops are checked."""
    write_transformation_directory(tmp_path / "t", [["Resize", 8], ["Lambda", "os.system"]])
    result = run_module("apply_image_transformation", "--input_transformation_path", tmp_path / "t",
                        "--input_image_path", image_dir, "--output_path", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "input_transformation_path: unknown transform 'Lambda'" in result.stderr and not (tmp_path / "out").exists()


def test_bad_mode_is_refused(image_dir, tmp_path):
    write_transformation_directory(tmp_path / "t", designer_ops())
    result = run_module("apply_image_transformation", "--input_transformation_path", tmp_path / "t",
                        "--input_image_path", image_dir, "--mode", "For fun", "--output_path", tmp_path / "out")
    assert result.returncode == 1 and "invalid choice: 'For fun'" in result.stderr


# ---- op lists are bounded wherever they are read (a crafted folder must not exhaust memory) ----

@pytest.mark.parametrize("op", [["Resize", 60000], ["Pad", 40000], ["Resize", [[100, 70000]]],
                                ["RandomCrop", {"size": 32, "padding": 9000}]])
def test_crafted_transformation_directory_with_huge_sizes_is_refused(tmp_path, op):
    write_transformation_directory(tmp_path / "tf", [op])
    with pytest.raises(UserError, match=rf"{op[0]} (size|padding) .* is outside \[\d+, \d+\] pixels"):
        read_transformation(tmp_path / "tf", input_name="input_transformation_path")


def test_pending_transforms_in_meta_are_bounded_too(image_dir):
    meta_path = image_dir / "_meta.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["extension"] = {"designer_resnet": {"pending_transforms": [["Pad", 40000]]}}
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.raises(UserError, match=r"pending_transforms\): Pad padding \[40000\] is outside"):
        Ledger(ImageDirectory.load(image_dir).extension).pending


def test_a_models_recorded_preprocessing_passes_the_allowlist_and_bounds(tmp_path):
    from designer_resnet.models.model_directory import read_trained
    from designer_resnet.training.train import TrainConfig, train

    from conftest import write_labelled_set

    write_labelled_set(tmp_path / "raw", 3)
    convert_to_image_directory(tmp_path / "raw", tmp_path / "data")
    run_module("resnet", "--model_name", "resnet18", "--pretrained", "false", "--output_path", tmp_path / "untrained")
    train(tmp_path / "untrained", tmp_path / "data", tmp_path / "data", tmp_path / "model",
          TrainConfig(epochs=1, batch_size=3, workers=0))
    spec_path = tmp_path / "model" / "model_spec.yaml"
    good = spec_path.read_text()
    for ops, message in (([["Resize", 60000]], "Resize size .* is outside"),
                         ([["Lambda", "os.system"]], "unknown transform 'Lambda'")):
        spec = yaml.safe_load(good)
        spec["designer_resnet"]["preprocess"]["transforms"] = ops
        spec_path.write_text(yaml.safe_dump(spec))
        with pytest.raises(UserError, match=message):
            read_trained(tmp_path / "model")
