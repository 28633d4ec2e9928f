"""Init Image Transformation's policy augmentations (AutoAugment, RandAugment, TrivialAugmentWide, AugMix).

They are random ops like the flips: drawn afresh every epoch from each image's seed, pending in the ledger, never
written into files, dropped for scoring, and off by default, so a pipeline that sets none of them is unchanged.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

from designer_resnet.component_source import defaults, parameters
from designer_resnet.components import init_image_transformation
from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.directories.transformation_directory import write_transformation_directory
from designer_resnet.errors import UserError
from designer_resnet.training.dataset import ImageDataset, collate, decode_plan
from designer_resnet.transforms.apply import apply_image_transformation, read_transformation
from designer_resnet.transforms.ledger import Ledger
from designer_resnet.transforms.ops import (
    DESIGNER_SWITCHES, POLICY_OPS, RANDOM_OPS, designer_ops, plan, validate_ops, without_random)

from conftest import run_module

NORMALIZE = ["Normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}]
POLICIES = {  # each policy as Init writes it with the component's defaults
    "AutoAugment": ["AutoAugment", {"policy": "imagenet"}],
    "RandAugment": ["RandAugment", {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31}],
    "TrivialAugmentWide": ["TrivialAugmentWide", {"num_magnitude_bins": 31}],
    "AugMix": ["AugMix", {"severity": 3, "mixture_width": 3, "chain_depth": -1, "alpha": 1.0}],
}
CROP_FLIP = [["RandomResizedCrop", 24], ["RandomHorizontalFlip", {}]]


def _set(root, count=6, fmt="JPEG") -> ImageDirectory:
    """An ImageDirectory of `count` photo-like images (blurred colour noise, 32-47 px) in 2 classes."""
    rng = np.random.default_rng(7)
    for i in range(count):
        (root / "raw" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (int(rng.integers(32, 48)), int(rng.integers(32, 48)), 3), dtype=np.uint8)
        Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5)).save(
            root / "raw" / f"c{i % 2}" / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", format=fmt)
    convert_to_image_directory(root / "raw", root / "set")
    return ImageDirectory.load(root / "set", input_name="training_data")


def _epoch(dataset: ImageDataset, seed: int, workers: int = 0) -> torch.Tensor:
    """Every item under one epoch seed, in index order, as one normalised float batch on the CPU."""
    dataset.set_epoch_seed(seed)
    loader = DataLoader(dataset, batch_size=len(dataset), num_workers=workers, collate_fn=collate)
    return torch.cat([dataset.device_batch(images, torch.device("cpu")) for images, _ in loader])


def test_init_offers_the_policies_of_torchvisions_recipe():
    params = parameters("init_image_transformation")
    assert params["policy_augmentation"]["enum"] == ["None", *POLICY_OPS]
    assert defaults("init_image_transformation")["policy_augmentation"] == "None"
    assert params["auto_augment_policy"]["enum"] == [p.value for p in T.AutoAugmentPolicy]
    assert POLICY_OPS.keys() <= RANDOM_OPS
    for name, op in POLICIES.items():  # the component's defaults are torchvision's own
        built = validate_ops([op])[0]
        assert designer_ops(policy_augmentation=name)[-1] == op == built
        for key, value in op[1].items():
            expected = getattr(getattr(T, name)(), key)
            assert (expected.value if key == "policy" else expected) == value, (name, key)


# ---- drawn from each image's seed, anew every epoch, on the uint8 and the float item paths ----

@pytest.mark.parametrize("policy", list(POLICIES))
def test_a_policy_changes_images_the_same_for_an_item_and_anew_every_epoch(tmp_path, policy):
    directory = _set(tmp_path)
    classes = {"c0": 0, "c1": 1}
    plain = _epoch(ImageDataset(directory, [["Resize", [[40, 40]]], NORMALIZE], classes), 1)
    ops = [["Resize", [[40, 40]]], POLICIES[policy], NORMALIZE]  # one size, so the items stack
    dataset = ImageDataset(directory, ops, classes)
    assert dataset[0][0].dtype == torch.uint8  # uint8 items: the policy runs on the PIL image in the worker
    first = _epoch(dataset, 1)
    changed = sum(not torch.equal(a, b) for a, b in zip(first, plain))
    assert changed >= len(first) // 2, changed
    assert torch.equal(_epoch(ImageDataset(directory, ops, classes), 1), first)  # a fresh dataset, a resume
    assert torch.equal(_epoch(dataset, 1, workers=1), first)  # in a loader worker too
    assert torch.equal(_epoch(ImageDataset(directory, ops, classes, uint8=False), 1), first)  # float path, bit for bit
    second = _epoch(dataset, 2)
    assert sum(not torch.equal(a, b) for a, b in zip(first, second)) >= len(first) // 2


# ---- the ledger: pending for training, dropped for inference and scoring ----

@pytest.mark.parametrize("policy", list(POLICIES))
def test_apply_for_training_records_a_policy_as_pending_and_keeps_the_files_bytes(tmp_path, policy):
    source = _set(tmp_path, count=4, fmt="PNG")
    ops = designer_ops(resize=False, center_crop=False, random_resized_crop=True, random_resized_crop_size=24,
                       policy_augmentation=policy)
    assert ops == CROP_FLIP + [POLICIES[policy]]
    write_transformation_directory(tmp_path / "tf", ops)
    apply_image_transformation(tmp_path / "tf", tmp_path / "set", tmp_path / "out", mode="For training")
    out = ImageDirectory.load(tmp_path / "out")
    for before, after in zip(source.rows, out.rows, strict=True):
        assert out.image_path(after).read_bytes() == source.image_path(before).read_bytes()
    ledger = Ledger(out.extension)
    assert ledger.applied == [] and ledger.pending == ops and ledger.mode == "For training"
    # A model trained on it scores with none of them; nor does an inference copy hold or owe one.
    assert ledger.inference_chain([], None)["transforms"] == []
    apply_image_transformation(tmp_path / "tf", tmp_path / "set", tmp_path / "inference", mode="For inference")
    assert Ledger(ImageDirectory.load(tmp_path / "inference").extension).pending == []


def test_inference_drops_a_policy_and_writes_the_deterministic_ops_around_it():
    ops = [["Resize", 40], POLICIES["AugMix"], ["CenterCrop", 32], NORMALIZE]
    assert without_random(ops) == [["Resize", 40], ["CenterCrop", 32], NORMALIZE]
    assert plan(ops, "inference") == ([["Resize", 40], ["CenterCrop", 32]], [NORMALIZE])
    assert plan(ops, "training") == ([["Resize", 40]], ops[1:])  # from the policy on, drawn every epoch


def test_training_with_a_policy_decodes_in_the_workers_and_the_model_scores_without_it(tmp_path, caplog):
    from designer_resnet.models.create import create_untrained_model
    from designer_resnet.models.model_directory import read_trained
    from designer_resnet.training.train import TrainConfig, train

    _set(tmp_path, count=8)
    write_transformation_directory(tmp_path / "tf", CROP_FLIP + [POLICIES["RandAugment"]])
    apply_image_transformation(tmp_path / "tf", tmp_path / "set", tmp_path / "train", mode="For training")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    with caplog.at_level(logging.WARNING):
        train(tmp_path / "untrained", tmp_path / "train", tmp_path / "set", tmp_path / "model",
              TrainConfig(epochs=1, batch_size=4, workers=0, jpeg_decode="device"))
    assert "jpeg_decode: images are decoded in the loader workers: RandAugment is not one of the ops" in caplog.text
    assert read_trained(tmp_path / "model").preprocess["transforms"] == [["Resize", [[24, 24]]]]  # its crop's size


# ---- the device-decode path serves crops and flips only: a policy goes to the workers, and the log says so ----

@pytest.mark.parametrize("policy", list(POLICIES))
def test_device_decode_falls_back_to_the_workers_for_a_policy_with_a_log_line(tmp_path, caplog, policy):
    directory = _set(tmp_path, count=2)
    cpu = torch.device("cpu")
    assert decode_plan("device", CROP_FLIP + [NORMALIZE], directory, cpu) is not None  # crops and flips: served
    ops = CROP_FLIP + [POLICIES[policy], NORMALIZE]
    why = f"jpeg_decode: images are decoded in the loader workers: {policy} is not one of the ops decoded on the device"
    with caplog.at_level(logging.INFO):
        assert decode_plan("device", ops, directory, cpu) is None
        assert decode_plan("auto", ops, directory, torch.device("cuda")) is None  # auto on a GPU: said at INFO
    said = [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records  # not "only read them" (served)
            if "decoded in the loader workers" in r.getMessage()]
    assert said == [(logging.WARNING, why), (logging.INFO, why)]


# ---- off by default: the transformation directory and the op list of every older setting are unchanged ----

def _old_designer_ops(**params) -> list[list]:
    """The op list as Init wrote it before the policies: its Boolean switches, in order."""
    values = {**defaults("init_image_transformation"), **params}
    return [[op, values[argument] if isinstance(argument, str) else argument]
            for switch, (op, argument) in DESIGNER_SWITCHES.items() if values[switch]]


UNUSED_POLICY_PARAMETERS = ["--auto_augment_policy", "svhn", "--rand_augment_num_ops", "5",
                            "--rand_augment_magnitude", "200", "--num_magnitude_bins", "7", "--augmix_severity", "9",
                            "--augmix_mixture_width", "2", "--augmix_chain_depth", "4", "--augmix_alpha", "0.5"]


@pytest.mark.parametrize("extra", [[], UNUSED_POLICY_PARAMETERS], ids=["defaults", "policy_parameters_without_policy"])
def test_without_a_policy_init_writes_the_transformation_directory_it_wrote_before(tmp_path, extra):
    init_image_transformation.main(["--output_path", str(tmp_path / "new"), *extra])
    write_transformation_directory(tmp_path / "old", [["Resize", 256], ["CenterCrop", 224],
                                                      ["RandomHorizontalFlip", {}]])
    for name in ("_transforms.json", "_meta.yaml"):
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes(), name
    every = {switch: True for switch in DESIGNER_SWITCHES}
    for params in ({}, every, {**every, "rand_augment_magnitude": 200}, {"resize": False, "random_crop": True}):
        assert designer_ops(**params) == _old_designer_ops(**params), params


def test_init_puts_the_policy_after_the_crops_and_flips_and_before_the_rest(tmp_path):
    init_image_transformation.main(["--output_path", str(tmp_path / "t"), "--random_resized_crop", "true",
                                    "--random_vertical_flip", "true", "--random_rotation", "true",
                                    "--random_erasing", "true", "--policy_augmentation", "RandAugment",
                                    "--rand_augment_num_ops", "3", "--rand_augment_magnitude", "5",
                                    "--num_magnitude_bins", "11"])
    ops = json.loads((tmp_path / "t" / "_transforms.json").read_text())
    assert [op for op, _ in ops] == ["Resize", "CenterCrop", "RandomResizedCrop", "RandomHorizontalFlip",
                                     "RandomVerticalFlip", "RandAugment", "RandomRotation", "RandomErasing"]
    assert ops[5] == ["RandAugment", {"num_ops": 3, "magnitude": 5, "num_magnitude_bins": 11}]
    with pytest.raises(UserError, match="^rand_augment_magnitude 11 must be below num_magnitude_bins 11$"):
        init_image_transformation.main(["--output_path", str(tmp_path / "u"), "--policy_augmentation",
                                        "RandAugment", "--rand_augment_magnitude", "11", "--num_magnitude_bins", "11"])
    assert not (tmp_path / "u").exists()


# ---- a hand-edited or hostile transformation file: every argument is bounded, one line each ----

BAD = [
    (["RandAugment", {"num_ops": 0}], r"RandAugment num_ops 0 is outside \[1, 16\]"),
    (["RandAugment", {"num_ops": 10**9}], r"RandAugment num_ops 1000000000 is outside \[1, 16\]"),
    (["RandAugment", {"num_ops": 2.5}], "RandAugment num_ops 2.5 is not a whole number"),
    (["RandAugment", {"num_ops": True}], "RandAugment num_ops True is not a whole number"),
    (["RandAugment", {"magnitude": 31}], r"RandAugment magnitude 31 is above num_magnitude_bins - 1 \(30\)"),
    (["RandAugment", [2, 5, 4]], r"RandAugment magnitude 5 is above num_magnitude_bins - 1 \(3\)"),
    (["RandAugment", {"magnitude": -1}], r"RandAugment magnitude -1 is outside \[0, 255\]"),
    (["RandAugment", {"nm_ops": 2}], "RandAugment does not accept .*nm_ops"),
    (["RandAugment", [2, 9, 31, 0]],
     "RandAugment takes only num_ops, magnitude, num_magnitude_bins, not 'interpolation'"),
    (["RandAugment", [1, 2, 3, 4, 5, 6]], "RandAugment does not accept"),
    (["TrivialAugmentWide", {"num_magnitude_bins": 1}],
     r"TrivialAugmentWide num_magnitude_bins 1 is outside \[2, 256\]"),
    (["TrivialAugmentWide", 10**9], r"TrivialAugmentWide num_magnitude_bins 1000000000 is outside \[2, 256\]"),
    (["AutoAugment", {"policy": "imagenet2"}], "AutoAugment policy 'imagenet2' is not one of imagenet, cifar10, svhn"),
    (["AutoAugment", [["imagenet"]]], r"AutoAugment policy \['imagenet'\] is not one of"),
    (["AutoAugment", {"interpolation": 2}], "AutoAugment takes only policy, not 'interpolation'"),
    (["AugMix", {"severity": 11}], r"AugMix severity 11 is outside \[1, 10\]"),
    (["AugMix", {"mixture_width": 1000}], r"AugMix mixture_width 1000 is outside \[1, 16\]"),
    (["AugMix", {"chain_depth": -2}], r"AugMix chain_depth -2 is outside \[-1, 16\]"),
    (["AugMix", {"alpha": 0}], r"AugMix alpha 0 is outside \[0.01, 10.0\]"),
    (["AugMix", {"alpha": 10**400}], r"AugMix alpha 1000+\.\.\.0+ is outside \[0.01, 10.0\]"),
    (["AugMix", {"alpha": "1"}], "AugMix alpha '1' is not a finite number"),
    (["AugMix", {"fill": [0, 0, 0]}], "AugMix takes only severity, mixture_width, chain_depth, alpha, not 'fill'"),
]


@pytest.mark.parametrize("op, message", BAD, ids=[f"{op[0]}-{i}" for i, (op, _) in enumerate(BAD)])
def test_a_bad_policy_argument_in_a_transformation_file_is_one_line(tmp_path, op, message):
    write_transformation_directory(tmp_path / "tf", [["Resize", 40], op])
    with pytest.raises(UserError) as refused:
        read_transformation(tmp_path / "tf", input_name="input_transformation_path")
    text = str(refused.value)
    assert "\n" not in text and text.startswith("input_transformation_path: "), text
    assert text.endswith("; recreate the transformation with Init Image Transformation") or "does not accept" in text
    assert re.search(message, text), text


def test_a_policy_after_a_tensor_op_or_with_a_nan_is_refused_wherever_an_op_list_is_read():
    with pytest.raises(UserError, match="AugMix acts on the image, so it must come before ToTensor"):
        validate_ops([["ToTensor", {}], ["AugMix", {}]])
    with pytest.raises(UserError, match=r"pending_transforms\): AugMix alpha nan is not a finite number"):
        Ledger({"designer_resnet": {"pending_transforms": [["AugMix", {"alpha": float("nan")}]]}}).pending
    # Every spelling torchvision takes is read: keywords, positional values, one value, nothing.
    assert validate_ops([["RandAugment", [3, 4]], ["AutoAugment", "cifar10"], ["TrivialAugmentWide", None],
                         ["AugMix", {}]]) == [["RandAugment", [3, 4]], ["AutoAugment", "cifar10"],
                                              ["TrivialAugmentWide", None], ["AugMix", {}]]


def test_apply_refuses_a_bad_policy_argument_in_one_line(tmp_path):
    _set(tmp_path, count=2, fmt="PNG")
    write_transformation_directory(tmp_path / "tf", [["RandAugment", {"num_ops": 100000}]])
    result = run_module("apply_image_transformation", "--input_transformation_path", tmp_path / "tf",
                        "--input_image_path", tmp_path / "set", "--mode", "For training", "--output_path",
                        tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: input_transformation_path: RandAugment num_ops 100000 is outside [1, 16]; recreate the transformation "
        "with Init Image Transformation"]
    assert not (tmp_path / "out").exists()
