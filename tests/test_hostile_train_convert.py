"""Hostile and careless input to Convert and Train (issue 15): one line, before any work, nothing half-written."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from designer_resnet.data import archives
from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.training import train as train_module
from designer_resnet.training.distributed import DistInfo
from designer_resnet.training.train import TrainConfig, train

from conftest import REPO, convert_train_valid, make_image, write_labelled_set


# --- Convert: an image list naming one file many times --------------------------------------------------------------


def _bytes_written() -> int:
    """This process's bytes written so far (write and sendfile calls), from /proc."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def _extracted(archive: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        return sum(info.file_size for info in zf.infolist())


needs_proc_io = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts bytes written through /proc")


def _repeating_zip(tmp_path: Path, repeats: int, edge: int = 64) -> Path:
    """A zip of an ImageDirectory whose images.lst names one incompressible PNG `repeats` times."""
    raw = tmp_path / "raw"
    pixels = np.random.default_rng(0).integers(0, 256, (edge, edge, 3), dtype=np.uint8)
    for name in ("a", "b"):
        (raw / name).mkdir(parents=True)
        Image.fromarray(pixels).save(raw / name / "0.png")
    convert_to_image_directory(raw, tmp_path / "one")
    one = tmp_path / "one"
    row = json.loads((one / "images.lst").read_text().splitlines()[0])
    rows = [{**row, "id": i} for i in range(repeats)]
    (one / "images.lst").write_text("".join(json.dumps(r) + "\n" for r in rows))
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("_meta.yaml", "_schema.json", "images.lst", row["image_info"]["file_name"]):
            zf.write(one / name, name)
    return archive


@needs_proc_io
def test_image_list_repeating_one_file_is_held_to_the_archive_ratio(tmp_path, monkeypatch):
    archive = _repeating_zip(tmp_path, 500)  # 500 copies of a 12 KiB file, 5.9 MiB, from a 14 KiB zip
    monkeypatch.setattr(archives, "RATIO_FREE_BYTES", 0)  # the 64 MiB allowance, which a test cannot afford to pass
    before = _bytes_written()
    with pytest.raises(UserError, match=r"input_path: archive bomb\.zip lists files to copy \(one file 500 times\): "
                                        r"5\.\d MiB, more than .* an expansion over 200x"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert _bytes_written() - before < _extracted(archive) + (64 << 10)  # the extraction, not 500 copies
    assert not (tmp_path / "out").exists()


@needs_proc_io
def test_image_list_repeating_one_file_is_held_to_max_extracted_gb(tmp_path):
    archive = _repeating_zip(tmp_path, 100)  # extracts to 13 KiB, lists 1.2 MiB of copies
    before = _bytes_written()
    with pytest.raises(UserError, match=r"input_path: archive bomb\.zip lists files to copy \(one file 100 times\): "
                                        r"1\.\d MiB, more than 1\.0 MiB, the max_extracted_gb limit"):
        convert_to_image_directory(archive, tmp_path / "out", max_extracted_gb=1 / 1024)
    assert _bytes_written() - before < _extracted(archive) + (64 << 10)
    assert not (tmp_path / "out").exists()


def test_archive_whose_list_names_each_file_once_converts_under_its_limits(tmp_path, monkeypatch):
    archive = _repeating_zip(tmp_path, 1)
    monkeypatch.setattr(archives, "RATIO_FREE_BYTES", 0)
    report = convert_to_image_directory(archive, tmp_path / "out", max_extracted_gb=1 / 1024)
    assert report.written == 1


# --- Convert: a stray photo beside the class folders -------------------------------------------------------------


def test_loose_image_beside_class_folders_is_named_at_convert(tmp_path, caplog):
    write_labelled_set(tmp_path / "photos", 2, classes=("cat", "dog"))
    make_image(tmp_path / "photos" / "stray.jpg", fmt="JPEG")
    with caplog.at_level(logging.WARNING, logger="designer_resnet"):
        report = convert_to_image_directory(tmp_path / "photos", tmp_path / "out")
    assert not report.labelled and report.written == 5  # the layout rule holds: loose images give an unlabelled set
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "1 image(s) lie at the top" in warnings[0] and "(cat, dog)" in warnings[0]
    assert "UNLABELLED" in warnings[0] and "move stray.jpg into its class folder or delete it" in warnings[0]


def test_class_folders_alone_give_no_loose_image_warning(tmp_path, caplog):
    write_labelled_set(tmp_path / "photos", 2, classes=("cat", "dog"))
    with caplog.at_level(logging.WARNING, logger="designer_resnet"):
        assert convert_to_image_directory(tmp_path / "photos", tmp_path / "out").labelled
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_train_on_unlabelled_images_says_how_convert_labels(tmp_path, monkeypatch):
    convert_train_valid(tmp_path, 2, 1, classes=("cat", "dog"))
    make_image(tmp_path / "raw_train" / "stray.png")
    convert_to_image_directory(tmp_path / "raw_train", tmp_path / "unlabelled")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    _no_training(monkeypatch)
    with pytest.raises(UserError, match=r"training_data: the images have no labels; .* only when every image is in "
                                        r"one .*: move or delete any image at the folder's top level"):
        train(tmp_path / "untrained", tmp_path / "unlabelled", tmp_path / "valid", tmp_path / "out", _cfg())


# --- Train: checkpoint_path, batch_size ------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    """2 classes: 2 training and 1 validation image each (32×32), and an untrained resnet18."""
    convert_train_valid(tmp_path, 2, 1, classes=("a", "b"))
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    return tmp_path


def _cfg(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 2, "learning_rate": 0.01, "workers": 0, **kw})


def _no_training(monkeypatch):
    """Make any epoch fail the test: these checks must come before training."""
    def started(*args, **kwargs):
        raise AssertionError("an epoch started before the input was refused")

    monkeypatch.setattr(train_module, "train_one_epoch", started)


def _train(path, out, checkpoint, **cfg):
    return train(path / "untrained", path / "train", path / "valid", out, _cfg(**cfg), checkpoint_dir=checkpoint)


@pytest.mark.parametrize("model, checkpoint, says", [
    ("runs/model", "runs/model", "is the trained_model folder too"),
    ("runs/model", "runs/model/ckpt", "is inside trained_model"),
    ("runs/model", "runs", "holds trained_model"),
    ("runs/model", "runs/./model/../model", "is the trained_model folder too"),
])
def test_checkpoint_path_and_trained_model_must_be_apart(small, monkeypatch, model, checkpoint, says):
    _no_training(monkeypatch)
    with pytest.raises(UserError, match=f"checkpoint_path: .* {says}.*; give checkpoints a folder of their own"):
        _train(small, small / model, small / checkpoint)
    assert not (small / "runs").exists()  # nothing made, nothing half-written


def test_checkpoint_path_through_a_link_to_the_model_folder_is_refused(small, monkeypatch):
    _no_training(monkeypatch)
    (small / "model").mkdir()
    (small / "alias").symlink_to(small / "model")
    with pytest.raises(UserError, match="checkpoint_path: .*alias is the trained_model folder too"):
        _train(small, small / "model", small / "alias")


def test_checkpoint_path_that_is_a_file_is_refused_before_training(small, monkeypatch):
    _no_training(monkeypatch)
    (small / "ckpt").write_text("not a folder")
    with pytest.raises(UserError, match=r"checkpoint_path: .*ckpt is a file; give a folder"):
        _train(small, small / "out", small / "ckpt")
    assert not (small / "out").exists()


def test_checkpoint_path_under_a_file_is_refused_before_training(small, monkeypatch):
    _no_training(monkeypatch)
    (small / "notes.txt").write_text("a file, so nothing can be made under it")
    with pytest.raises(UserError, match=r"checkpoint_path: .*notes\.txt/runs/ckpt cannot be made: "
                                        r".*notes\.txt is a file"):
        _train(small, small / "out", small / "notes.txt" / "runs" / "ckpt")
    assert not (small / "out").exists()


@pytest.fixture
def immutable(tmp_path):
    """Make folders immutable (`chattr +i`: read-only even for root, like a read-only mount); undone after the test."""
    made = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
        made.append(folder)
        return folder

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


@pytest.mark.parametrize("inside", [False, True])
def test_checkpoint_path_in_a_read_only_place_is_refused_before_training(small, monkeypatch, immutable, inside):
    _no_training(monkeypatch)
    locked = immutable(small / "locked")
    checkpoint = locked / "ckpt" if inside else locked
    with pytest.raises(UserError, match=rf"checkpoint_path: cannot write in {checkpoint} \(Operation not permitted\); "
                                        "give a writable folder"):
        _train(small, small / "out", checkpoint)
    assert not (small / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_checkpoint_path_in_a_read_only_folder_is_refused_before_training(small, monkeypatch):
    _no_training(monkeypatch)
    (small / "locked").mkdir(mode=0o500)
    try:
        with pytest.raises(UserError, match=r"checkpoint_path: cannot write in .*locked/ckpt \(Permission denied\)"):
            _train(small, small / "out", small / "locked" / "ckpt")
    finally:
        (small / "locked").chmod(0o700)


def test_checkpoint_folders_made_for_a_run_refused_later_are_removed(small, monkeypatch):
    _no_training(monkeypatch)
    with pytest.raises(UserError, match="batch_size: 1 image per step"):
        _train(small, small / "out", small / "new" / "ckpt", batch_size=1)
    assert not (small / "new").exists() and not (small / "out").exists()


def test_train_cli_refuses_the_model_folder_as_checkpoint_path_in_one_line(small):
    out = small / "model"
    cmd = [sys.executable, "-m", "designer_resnet.components.train_pytorch_model",
           "--untrained_model", str(small / "untrained"), "--training_data", str(small / "train"),
           "--validation_data", str(small / "valid"), "--epochs", "1", "--batch_size", "2", "--workers", "0",
           "--trained_model", str(out), "--checkpoint_path", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint_path: {out} is the trained_model folder too, so the model would carry the checkpoint; "
        "give checkpoints a folder of their own, neither inside the trained model's nor holding it"]
    assert not out.exists()


def test_batch_size_1_is_refused_before_training(small, monkeypatch):
    _no_training(monkeypatch)
    with pytest.raises(UserError, match=r"batch_size: 1 image per step is too few for the network's BatchNorm layers, "
                                        r".*; use a batch size of 2 or more"):
        _train(small, small / "out", None, batch_size=1)
    assert not (small / "out").exists()


def test_batch_size_2_trains_on_32_pixel_images(small):
    assert len(_train(small, small / "out", None, batch_size=2).history) == 1


@pytest.mark.parametrize("batch_size, images, world, sync, refused", [
    (1, 8, 1, False, "batch_size: 1"),
    (1, 8, 1, True, "batch_size: 1"),  # one process: the global batch is its own
    (1, 8, 2, False, "batch_size: 1"),
    (1, 8, 2, True, None),  # two images per step in BatchNorm's statistics
    (4, 3, 2, False, "training_data: 3 images shared by 2 processes leave each process 1 image per step"),
    (4, 3, 2, True, None),
    (2, 4, 2, False, None),
    (4, 9, 4, False, None),
])
def test_batch_norm_needs_two_images_per_step_per_process_or_synced(batch_size, images, world, sync, refused):
    from designer_resnet.training.loaders import check_batch_norm_batch

    info = DistInfo(rank=0, world_size=world, local_rank=0, local_world_size=world)
    if refused is None:
        check_batch_norm_batch(batch_size, images, info, sync)
    else:
        with pytest.raises(UserError, match=refused):
            check_batch_norm_batch(batch_size, images, info, sync)
