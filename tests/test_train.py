"""Train PyTorch Model: outputs, determinism, DDP, resume, errors, and a real-data run."""

from __future__ import annotations

import copy
import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.data.sample import write_digits
from designer_resnet.data.split import split_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import read_trained
from designer_resnet.training.dataset import ImageDataset
from designer_resnet.training.train import CHECKPOINT, TrainConfig, train
from designer_resnet.transforms.ops import tensor_pipeline

from conftest import REPO, convert_train_valid, write_labelled_set as _write_set

@pytest.fixture
def tiny(tmp_path):
    """3 classes: 8 training and 3 validation images each (32×32), and an untrained resnet18."""
    convert_train_valid(tmp_path, 8, 3)
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    return tmp_path


def _cfg(**kw):
    base = dict(epochs=2, batch_size=8, learning_rate=0.01, workers=0, print_frequency=100)
    return TrainConfig(**{**base, **kw})


def _valid_batch(path):
    valid = ImageDirectory.load(path / "valid")
    trained = read_trained(path / "out")
    ds = ImageDataset(valid, trained.preprocess["transforms"] + [["Normalize", {"mean": trained.preprocess["mean"],
                                                                                "std": trained.preprocess["std"]}]],
                      {c: i for i, c in enumerate(trained.categories)})
    return ds.device_batch(torch.stack([ds[i][0] for i in range(len(ds))]), torch.device("cpu")), trained


def test_training_writes_loadable_model_and_mlflow_model(tiny, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out", _cfg())
    out = tiny / "out"
    assert len(result.history) == 2 and result.best_epoch in (1, 2)
    meta = yaml.safe_load((out / "_meta.yaml").read_text())
    spec = yaml.safe_load((out / "model_spec.yaml").read_text())
    assert meta == {"type": "ModelDirectory", "extension": {}, "model": "model_spec.yaml"}
    assert spec["model_file"] == "model" and spec["label_map_file"] == "index_to_label.csv"
    # What the built-in Score rebuilds: the network with a 3-way head, no ImageNet download.
    assert {k: spec["flavor_extras"]["init_params"][k] for k in ("model_name", "pretrained", "num_classes")} == {
        "model_name": "resnet18", "pretrained": False, "num_classes": 3}
    assert (out / "index_to_label.csv").read_text().splitlines() == [",label", "0,a", "1,b", "2,c"]
    with Image.open(out / "training_curves.png") as png:
        assert png.size[0] > 300

    images, trained = _valid_batch(tiny)
    assert trained.categories == ["a", "b", "c"]
    with torch.no_grad():
        expected = result.model.eval()(images)
        assert torch.allclose(trained.model(images), expected, atol=1e-5)
    # Also an MLflow model, with the weights stored once: nothing else in the folder is large.
    assert (out / "MLmodel").exists() and (out / "code" / "designer_resnet" / "serving" / "pyfunc.py").exists()
    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert sizes["model"] > 40e6 and sum(sizes.values()) - sizes["model"] < 2e6, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]

    import csv

    with open(out / "training_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "learning_rate", "images_per_second", "train_loss", "train_error", "valid_loss",
                            "top1", "top5"}
    assert not (out / "mlflow.db").exists()


def test_best_epoch_weights_are_kept(tiny):
    result = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out", _cfg(epochs=3, patience=5))
    best = max(result.history, key=lambda h: h.top1)
    assert result.best_epoch == best.epoch
    spec = yaml.safe_load((tiny / "out" / "model_spec.yaml").read_text())
    assert spec["designer_resnet"]["training"]["best_epoch"] == best.epoch and spec["designer_resnet"]["training"]["best_top1"] == best.top1


def test_same_seed_gives_identical_weights(tiny):
    a = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "a", _cfg(random_seed=7)).model
    b = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "b", _cfg(random_seed=7)).model
    c = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "c", _cfg(random_seed=8)).model
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def _train_cli(path, out, *extra):
    return [sys.executable, "-m", "designer_resnet.components.train_pytorch_model",
            "--untrained_model", str(path / "untrained"), "--training_data", str(path / "train"),
            "--validation_data", str(path / "valid"), "--batch_size", "8", "--learning_rate", "0.01",
            "--workers", "0", "--trained_model", str(out), *extra]


def _torchrun_cli(path, out, *extra):
    """_train_cli's command under torchrun with 2 processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *_train_cli(path, out, *extra)[1:]]


def _torchrun(path, out, *extra):
    result = subprocess.run(_torchrun_cli(path, out, *extra), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_process_torchrun_trains_with_gloo(tiny):
    result = _torchrun(tiny, tiny / "ddp", "--epochs", "2")
    spec = yaml.safe_load((tiny / "ddp" / "model_spec.yaml").read_text())
    assert spec["designer_resnet"]["training"]["world_size"] == 2
    trained = read_trained(tiny / "ddp")
    assert trained.categories == ["a", "b", "c"]
    assert trained.model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert result.stdout.count("trained 2 epoch(s)") == 1  # only rank 0 reports and writes


def test_sigterm_keeps_the_checkpoint_and_the_rerun_resumes_to_the_same_weights(tmp_path):
    """What Azure ML does to a pre-empted low-priority node: SIGTERM, then a rerun on the same checkpoint folder."""
    convert_train_valid(tmp_path, 32, 4, size=(64, 64))
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    epochs = ["--epochs", "5", "--patience", "10"]

    whole = subprocess.run(_train_cli(tmp_path, tmp_path / "whole", *epochs, "--checkpoint_path", str(tmp_path / "ck_whole")),
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    ckpt_dir = tmp_path / "ck_resumed"
    proc = subprocess.Popen(_train_cli(tmp_path, tmp_path / "resumed", *epochs, "--checkpoint_path", str(ckpt_dir)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (ckpt_dir / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(signal.SIGTERM)  # the handler is installed before the first epoch starts
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    killed_at = torch.load(ckpt_dir / CHECKPOINT, weights_only=True)["epoch"]
    assert 1 <= killed_at < 5
    assert err.strip().splitlines()[-1].startswith("error: training stopped by SIGTERM "), err[-2000:]
    assert f"checkpoint_path {ckpt_dir} keeps the checkpoint of epoch {killed_at}: rerun with the same " \
           "checkpoint_path to resume" in err
    # Nothing half-written: the staged output is removed on the way out.
    assert not (tmp_path / "resumed").exists() or not list((tmp_path / "resumed").iterdir())

    resumed = subprocess.run(_train_cli(tmp_path, tmp_path / "resumed", *epochs, "--checkpoint_path", str(ckpt_dir)),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in resumed.stdout
    assert not [p for p in (tmp_path / "resumed").iterdir() if p.name.startswith(".designer-resnet-")]
    final_whole = torch.load(tmp_path / "ck_whole" / CHECKPOINT, weights_only=True)
    final_resumed = torch.load(ckpt_dir / CHECKPOINT, weights_only=True)
    assert final_whole["epoch"] == final_resumed["epoch"] == 5
    for key, value in final_whole["model"].items():
        assert torch.equal(value, final_resumed["model"][key]), key
    a = torch.load(tmp_path / "whole" / "model", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unlabelled_training_data_is_refused(tiny):
    convert_to_image_directory(tiny / "raw_train" / "a", tiny / "unlabelled")
    with pytest.raises(UserError, match="training_data: the images have no labels"):
        train(tiny / "untrained", tiny / "unlabelled", tiny / "valid", tiny / "out", _cfg())


def test_validation_classes_must_be_training_classes(tiny):
    _write_set(tiny / "raw_other", 2, classes=("a", "zebra"))
    convert_to_image_directory(tiny / "raw_other", tiny / "other")
    with pytest.raises(UserError, match="validation_data: classes 'zebra' are not in the training data's classes"):
        train(tiny / "untrained", tiny / "train", tiny / "other", tiny / "out", _cfg())


def test_batch_larger_than_training_set_is_refused(tiny):
    with pytest.raises(UserError, match=r"batch_size: 25 is larger than the training set \(24 images\)"):
        train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out", _cfg(batch_size=25))
    assert not (tiny / "out").exists()


def test_folders_that_are_not_models_are_refused(tiny):
    with pytest.raises(UserError, match="untrained_model: expected UntrainedModelDirectory or ModelDirectory but .* "
                                       "ImageDirectory; connect the output of a module that produces "
                                       "UntrainedModelDirectory or ModelDirectory$"):
        train(tiny / "train", tiny / "train", tiny / "valid", tiny / "out", _cfg())
    # A trained model is a starting point too (fine-tuning: tests/test_finetune.py).


def test_train_cli_error_is_one_line(tiny):
    result = subprocess.run(_train_cli(tiny, tiny / "out", "--batch_size", "100"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: batch_size: 100 is larger than the training set (24 images); use a batch size of at most 24"]


def test_mixed_image_sizes_are_resized_with_a_warning(tmp_path, caplog):
    _write_set(tmp_path / "raw_train", 6, sizes=[(30, 20), (40, 40)], seed=0)
    _write_set(tmp_path / "raw_valid", 2, sizes=[(25, 35)], seed=1)
    convert_to_image_directory(tmp_path / "raw_train", tmp_path / "train")
    convert_to_image_directory(tmp_path / "raw_valid", tmp_path / "valid")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    with caplog.at_level(logging.WARNING):
        train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "out", _cfg(epochs=1, batch_size=6))
    assert "different sizes" in caplog.text and "resizing all to 224x224" in caplog.text
    trained = read_trained(tmp_path / "out")
    assert trained.preprocess["transforms"] == [["Resize", [[224, 224]]]]
    with Image.open(next((tmp_path / "valid" / "image").iterdir())) as img:
        assert tensor_pipeline(trained.preprocess["transforms"])(img.convert("RGB")).shape == (3, 224, 224)


@pytest.mark.slow
def test_digits_reach_95_percent_top1_in_10_epochs(tmp_path, record_property):
    """scikit-learn digits, 32×32, 80/20 stratified, resnet18 from scratch."""
    write_digits(tmp_path / "digits")
    convert_to_image_directory(tmp_path / "digits", tmp_path / "all")
    split_image_directory(tmp_path / "all", tmp_path / "train", tmp_path / "valid", fraction=0.8, seed=42)
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    result = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "out",
                   TrainConfig(epochs=10, batch_size=16, learning_rate=0.01, random_seed=1, patience=3))
    best = max(h.top1 for h in result.history)
    record_property("digits_top1", best)
    print(f"digits validation top-1: {best:.4f} after {len(result.history)} epoch(s)")
    assert best >= 0.95


def test_local_run_records_every_epoch_in_training_metrics_csv(tiny, monkeypatch):
    """No tracking server: a row per epoch in training_metrics.csv, resumed epochs too; no MLflow store anywhere."""
    import csv

    from designer_resnet.training.report import epoch_metrics

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tiny)
    first = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "first", _cfg(epochs=2, patience=5),
                  checkpoint_dir=tiny / "ckpt")
    resumed = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "resumed", _cfg(epochs=3, patience=5),
                    checkpoint_dir=tiny / "ckpt")
    assert [h.epoch for h in first.history] == [1, 2] and [h.epoch for h in resumed.history] == [1, 2, 3]
    for out, result in ((tiny / "first", first), (tiny / "resumed", resumed)):
        with open(out / "training_metrics.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["epoch", "train_loss", "train_error", "images_per_second", "valid_loss", "top1",
                                 "top5", "learning_rate"]
        assert [{k: float(v) for k, v in row.items()} for row in rows] == [
            {"epoch": h.epoch, **epoch_metrics(h)} for h in result.history]
        assert not (out / "mlflow.db").exists()
    assert not (tiny / "mlruns").exists()


def test_tracking_server_gets_every_epoch_and_the_params(tiny, monkeypatch):
    """Where MLFLOW_TRACKING_URI is set (Azure ML sets it for the job's run), MLflow gets the metrics as before."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tiny / 'server.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out", _cfg(epochs=2, patience=5))
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    for metric in ("learning_rate", "images_per_second", "train_loss", "train_error", "valid_loss", "top1", "top5"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], metric
    assert run.data.params["batch_size"] == "8" and run.info.status == "FINISHED"
    assert (tiny / "out" / "training_metrics.csv").exists() and not (tiny / "out" / "mlflow.db").exists()


def test_cli_run_writes_nothing_under_home_or_the_working_directory(tiny):
    """No ~/.config/mlflow (MLflow's telemetry), no ~/.config or ~/.cache/matplotlib, no ./mlruns."""
    from conftest import user_environment

    home, cwd = tiny / "home", tiny / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = user_environment(home)
    result = subprocess.run(_train_cli(tiny, tiny / "out", "--epochs", "1"), cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert list(cwd.iterdir()) == []
    assert (tiny / "out" / "training_metrics.csv").exists() and (tiny / "out" / "training_curves.png").exists()


# --- checkpoints may continue only the same run --------------------------------------------------------------------


def test_checkpoint_of_another_run_is_refused(tiny):
    ckpt = tiny / "ckpt"
    train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "first", _cfg(epochs=1), checkpoint_dir=ckpt)
    before = (ckpt / CHECKPOINT).read_bytes()
    for n, (cfg, message) in enumerate([
            (_cfg(epochs=1, learning_rate=0.02), r"made with learning_rate 0\.01, not 0\.02"),
            (_cfg(epochs=1, random_seed=2), r"made with random_seed 1, not 2"),
            (_cfg(epochs=1, patience=4), r"made with patience 3, not 4"),
            (_cfg(epochs=1, warmup_step_number=3), r"made with warmup_step_number 0, not 3")]):
        with pytest.raises(UserError, match=rf"^checkpoint_path: the checkpoint in .*ckpt was {message}; "
                                            "give an empty checkpoint folder to start over$"):
            train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / f"o{n}", cfg, checkpoint_dir=ckpt)
    # Other data: a relabelled image, or one file replaced.
    _write_set(tiny / "raw_valid2", 3, seed=2)
    convert_to_image_directory(tiny / "raw_valid2", tiny / "valid2")
    with pytest.raises(UserError, match=r"^checkpoint_path: the checkpoint in .* was made with other validation_data "
                                        r"\(images, labels or files differ\); give an empty checkpoint folder"):
        train(tiny / "untrained", tiny / "train", tiny / "valid2", tiny / "o5", _cfg(epochs=1), checkpoint_dir=ckpt)
    # Another untrained model (same name, other init params).
    create_untrained_model(tiny / "untrained2", {"model_name": "resnet18", "pretrained": False,
                                                 "zero_init_residual": True})
    with pytest.raises(UserError, match=r"^checkpoint_path: the checkpoint in .* was made with another untrained_model"):
        train(tiny / "untrained2", tiny / "train", tiny / "valid", tiny / "o6", _cfg(epochs=1), checkpoint_dir=ckpt)
    assert (ckpt / CHECKPOINT).read_bytes() == before
    # What does not change the result may change: the run resumes (here: nothing left to train).
    again = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "o7", _cfg(epochs=1, print_frequency=1),
                  checkpoint_dir=ckpt)
    assert [h.epoch for h in again.history] == [1]


def test_checkpoint_with_other_training_files_or_world_size_is_refused(tiny, monkeypatch):
    from designer_resnet.training import train as train_module
    from designer_resnet.training.distributed import DistInfo

    ckpt = tiny / "ckpt"
    train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "first", _cfg(epochs=1), checkpoint_dir=ckpt)
    image = sorted((tiny / "train" / "image").rglob("*.png"))[0] if (tiny / "train" / "image").exists() else \
        sorted(p for p in (tiny / "train").rglob("*.png"))[0]
    original = image.read_bytes()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(image)
    with pytest.raises(UserError, match=r"made with other training_data"):
        train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "o1", _cfg(epochs=1), checkpoint_dir=ckpt)
    image.write_bytes(original)
    checked = train_module.run_identity  # the world size is part of the run
    monkeypatch.setattr(train_module, "run_identity",
                        lambda *a, **k: {**checked(*a, **k), "world_size": 2})
    with pytest.raises(UserError, match=r"made with world_size 1, not 2"):
        train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "o2", _cfg(epochs=1), checkpoint_dir=ckpt)


# --- a last batch of one image ------------------------------------------------------------------------------------


def test_last_batch_of_one_small_image_does_not_break_batchnorm(tmp_path):
    convert_train_valid(tmp_path, 3, 1)  # 9 images, batch 8: the last batch holds one 32x32 image
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    result = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "out",
                   _cfg(epochs=1, batch_size=8))
    assert len(result.history) == 1


# --- DDP: fewer validation images than processes; collision-free seeds --------------------------------------------


def test_per_epoch_seeds_do_not_collide():
    from designer_resnet.training.train import epoch_seed

    seeds = {epoch_seed(seed, epoch, rank) for seed in (0, 1, 2) for epoch in range(1, 60) for rank in range(64)}
    assert len(seeds) == 3 * 59 * 64
    assert all(0 <= s < 2**63 for s in seeds)


def test_two_processes_with_one_validation_image_do_not_hang(tmp_path):
    import os

    convert_train_valid(tmp_path, 4, 1)
    listing = tmp_path / "valid" / "images.lst"
    listing.write_text(listing.read_text().splitlines()[0] + "\n")  # one validation image, two processes
    assert len(ImageDirectory.load(tmp_path / "valid")) == 1
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    cmd = _torchrun_cli(tmp_path, tmp_path / "ddp", "--epochs", "1", "--batch_size", "4")
    # Output to files, not pipes: a hung worker (torchrun starts each in its own session) must not block the test.
    with open(tmp_path / "stdout", "w") as out_f, open(tmp_path / "stderr", "w") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, cwd=REPO, start_new_session=True)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # torchrun stops its workers (SIGTERM, then SIGKILL after its grace period)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pytest.fail("2 processes with 1 validation image hung")
    out, err = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, err[-3000:]
    assert out.count("trained 1 epoch(s)") == 1


# --- loader workers: a resumed run draws the same augmentations ----------------------------------------------------


def _flip_data(tmp_path):
    """3 classes: 8 training and 3 validation images each (32×32), a random flip on the training set."""
    _write_set(tmp_path / "raw_train", 8, seed=0)
    _write_set(tmp_path / "raw_valid", 3, seed=1)
    _convert_with_flip(tmp_path)


def _convert_with_flip(tmp_path):
    """raw_train and raw_valid -> train (with a recorded random flip) and valid; an untrained resnet18."""
    from designer_resnet.directories.transformation_directory import write_transformation_directory
    from designer_resnet.transforms.apply import apply_image_transformation

    convert_to_image_directory(tmp_path / "raw_train", tmp_path / "train_raw")
    convert_to_image_directory(tmp_path / "raw_valid", tmp_path / "valid")
    write_transformation_directory(tmp_path / "tf", [["RandomHorizontalFlip", {}]])
    apply_image_transformation(tmp_path / "tf", tmp_path / "train_raw", tmp_path / "train", mode="For training")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})


class _StopAfterFirstCheckpoint(Exception):
    pass


def test_resume_with_loader_workers_draws_the_same_augmentations(tmp_path, monkeypatch):
    from designer_resnet.training import train as train_module

    _flip_data(tmp_path)
    cfg = _cfg(epochs=3, workers=2, patience=10)
    whole = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "whole", cfg)

    save = train_module.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == 1:
            raise _StopAfterFirstCheckpoint

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(_StopAfterFirstCheckpoint):
        train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "cut", cfg,
              checkpoint_dir=tmp_path / "ckpt")
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    resumed = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "resumed", cfg,
                    checkpoint_dir=tmp_path / "ckpt")
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    final = torch.load(tmp_path / "ckpt" / CHECKPOINT, weights_only=True)["model"]
    a = torch.load(tmp_path / "whole" / "model", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.best_epoch == resumed.best_epoch
    assert final  # the last epoch's weights were checkpointed


# --- best epoch, early stopping, learning-rate shape ---------------------------------------------------------------


def _scripted_evaluate(monkeypatch, scores):
    """evaluate returns the scripted (valid_loss, top1) of each epoch and records the weights it scored."""
    from designer_resnet.training import train as train_module

    seen = []

    def scripted(model, loader, device, info):
        seen.append({k: v.detach().clone() for k, v in train_module._unwrap(model).state_dict().items()})
        loss, top1 = scores[len(seen) - 1]
        return loss, top1, top1

    monkeypatch.setattr(train_module, "evaluate", scripted)
    return seen


def test_written_model_is_the_best_epochs_not_the_last(tiny, monkeypatch):
    seen = _scripted_evaluate(monkeypatch, [(1.0, 0.3), (0.9, 0.8), (0.8, 0.5)])
    result = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out", _cfg(epochs=3, patience=5))
    assert result.best_epoch == 2 and len(seen) == 3
    written = read_trained(tiny / "out").model.state_dict()
    returned = result.model.state_dict()
    for key, value in seen[1].items():
        assert torch.equal(written[key], value) and torch.equal(returned[key], value), key
    assert not all(torch.equal(written[k], seen[2][k]) for k in seen[2])  # the last epoch's weights differ
    spec = yaml.safe_load((tiny / "out" / "model_spec.yaml").read_text())
    assert spec["designer_resnet"]["training"]["best_epoch"] == 2


def test_early_stopping_after_patience_epochs_without_lower_validation_loss(tiny, monkeypatch):
    # Losses: 1.0, 1.1 (1 stale), 0.9 (reset), 1.0 (1), 1.2 (2 = patience): stop after epoch 5 of 7.
    _scripted_evaluate(monkeypatch, [(1.0, 0.5), (1.1, 0.5), (0.9, 0.6), (1.0, 0.6), (1.2, 0.6), (0.1, 0.9), (0.1, 0.9)])
    ckpt = tiny / "ckpt"
    result = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out", _cfg(epochs=7, patience=2),
                   checkpoint_dir=ckpt)
    assert [h.epoch for h in result.history] == [1, 2, 3, 4, 5] and result.best_epoch == 3
    assert torch.load(ckpt / CHECKPOINT, weights_only=True)["stopped"] is True
    # A rerun on the stopped run's checkpoint has nothing left to train.
    again = train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "again", _cfg(epochs=7, patience=2),
                  checkpoint_dir=ckpt)
    assert [h.epoch for h in again.history] == [1, 2, 3, 4, 5]


def test_learning_rate_warms_up_linearly_then_decays_to_zero_at_the_last_step(tiny):
    import csv

    from designer_resnet.training.train import lr_lambda

    f = lr_lambda(4, 9)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [f(s) for s in range(4, 10)] == pytest.approx([(1 - k / 5) ** 0.9 for k in range(6)])
    assert f(9) == 0.0 and lr_lambda(0, 9)(0) == 1.0
    # 24 images, batch 8: 3 steps an epoch, 9 in all; each epoch's row has the rate at its first step.
    train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "out",
          _cfg(epochs=3, patience=5, warmup_step_number=4, learning_rate=0.01))
    with open(tiny / "out" / "training_metrics.csv", newline="") as fh:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(fh)]
    assert rates == pytest.approx([0.01 * f(0), 0.01 * f(3), 0.01 * f(6)])


def test_listed_images_missing_or_unreadable_are_one_line(tiny):
    """A listed file that is gone is caught before training; one that cannot be decoded, when it is read."""
    files = sorted((tiny / "train" / "image").iterdir())
    files[1].write_bytes(b"not an image")
    result = subprocess.run(_train_cli(tiny, tiny / "out", "--epochs", "1"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: training_data: image/{files[1].name} (row id {files[1].stem.split('_')[1]}) cannot be read "
        "(UnidentifiedImageError); remove it, or rebuild the set with Convert to Image Directory, which skips "
        "unreadable files"]
    files[0].unlink()
    result = subprocess.run(_train_cli(tiny, tiny / "out", "--epochs", "1"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: training_data: 1 listed image file(s) are missing, the first "
                                            f"image/{files[0].name}")
    assert not (tiny / "out").exists()


def test_rows_whose_sizes_lie_do_not_hide_mixed_sizes(tmp_path):
    """images.lst says 32x32 for every row, but some files are not: training sees the real sizes and resizes."""
    import json

    convert_train_valid(tmp_path, 4, 2)
    rows = [json.loads(line) for line in (tmp_path / "train" / "images.lst").read_text().splitlines()]
    for row in rows[:2]:  # the files change size; the rows keep saying 32x32
        path = tmp_path / "train" / row["image_info"]["file_name"]
        Image.open(path).resize((48, 40)).save(path)
    assert all(r["image_info"]["width"] == 32 for r in rows)
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    result = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "out",
                   _cfg(epochs=1, batch_size=4))
    assert len(result.history) == 1
    assert read_trained(tmp_path / "out").preprocess["transforms"][:1] == [["Resize", [[224, 224]]]]


def test_a_lying_row_the_size_sample_missed_is_named_not_a_stacking_error(tiny, monkeypatch):
    """Only rows outside the header sample lie: the image is named when read, whatever the loader workers."""
    from designer_resnet.training import dataset as data_module

    monkeypatch.setattr(data_module, "SIZE_SAMPLE", 2)  # 24 rows: rows 0 and 12 are checked, row 5 is not
    train_dir = ImageDirectory.load(tiny / "train")
    liar = train_dir.rows[5]
    path = train_dir.image_path(liar)
    Image.open(path).resize((48, 40)).save(path)
    for workers in (0, 2):
        with pytest.raises(UserError) as caught:
            train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / f"out{workers}",
                  _cfg(epochs=1, workers=workers))
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"training_data: {train_dir.relative_path(liar)} (row id {liar['id']}) is 48x40, "
                                  "but the rows say 32x32"), message
        assert not (tiny / f"out{workers}").exists()


def test_unreadable_image_met_by_a_loader_worker_is_one_line(tiny):
    """Loader workers re-raise a worker's error as a traceback; the user still gets one line."""
    files = sorted((tiny / "train" / "image").iterdir())
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) // 2])  # a readable header (the size check passes), truncated pixels
    cmd = _train_cli(tiny, tiny / "out", "--epochs", "1")
    cmd[cmd.index("--workers") + 1] = "2"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: training_data: image/{files[3].name} (row id "), lines
    assert not (tiny / "out").exists()


def test_collate_names_sizes_that_cannot_share_a_batch():
    from designer_resnet.training.dataset import LoadFailure, collate

    same = collate([(torch.zeros(3, 8, 8), 0), (torch.ones(3, 8, 8), 1)])
    assert same[0].shape == (2, 3, 8, 8) and same[1].tolist() == [0, 1]
    mixed = collate([(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 10, 12), 1)])
    assert isinstance(mixed, LoadFailure) and mixed.message.startswith(
        "images of different sizes (8x8 and 12x10) reached one batch")
    failure = LoadFailure("training_data: x")
    assert collate([(torch.zeros(3, 8, 8), 0), failure]) is failure


# --- N processes train like one process with an N times larger batch ----------------------------------------------


def _weights(path):
    return {k: v.double() for k, v in torch.load(path, weights_only=True)["model"].items()
            if v.is_floating_point() and "running_" not in k}


def _distance(a, b):
    return sum(float((a[k] - b[k]).square().sum()) for k in a) ** 0.5


def _digit_data(tmp_path):
    """36 training and 12 validation digits (64×64, 10 classes), a random flip on the training set."""
    write_digits(tmp_path / "raw_train", size=64, limit=48, test_folder=tmp_path / "raw_valid", test_every=4)
    _convert_with_flip(tmp_path)


def test_two_processes_train_like_one_process_with_the_same_global_batch(tmp_path):
    """2 processes × batch 4 at learning rate 1e-5 (scaled by 2) against 1 process × batch 8 at 2e-5.

    Same permutation, same augmentations (a random flip), the same mean gradient, and with
    sync_batch_norm the same BatchNorm statistics: after 2 epochs (8 steps) the weights agree to
    float rounding. Without it each process normalises over its 4 images, and the weights move
    elsewhere. The learning rate is small because a freshly initialised ResNet in training-mode
    BatchNorm amplifies float rounding within a few steps at usual rates (any two float32 runs that
    sum in another order part ways); at this rate the steps stay close to linear, so what is
    compared is the distributed arithmetic, not that amplification.
    """
    from designer_resnet.models.model_directory import read_untrained
    from designer_resnet.training.train import seed_everything

    _digit_data(tmp_path)  # 36 training images: 4 steps an epoch either way
    one = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "one",
                _cfg(epochs=2, batch_size=8, learning_rate=2e-5, patience=10, sync_batch_norm=True),
                checkpoint_dir=tmp_path / "ck1")
    assert len(one.history) == 2
    common = ("--epochs", "2", "--batch_size", "4", "--learning_rate", "1e-5", "--patience", "10")
    _torchrun(tmp_path, tmp_path / "two", *common, "--sync_batch_norm", "True", "--checkpoint_path", str(tmp_path / "ck2"))
    _torchrun(tmp_path, tmp_path / "own", *common, "--checkpoint_path", str(tmp_path / "ck3"))

    seed_everything(1)  # the initial weights, as training builds them
    start = {k: v.double() for k, v in read_untrained(tmp_path / "untrained").build(10).state_dict().items()
             if v.is_floating_point() and "running_" not in k}
    single, synced, own = (_weights(tmp_path / ck / CHECKPOINT) for ck in ("ck1", "ck2", "ck3"))
    moved = _distance(single, start)
    assert moved > 1e-3  # the runs really trained (measured: 0.0097)
    # How far float rounding carries the synced run depends on the CPU's vector units (measured 1.3e-3 × moved
    # on one machine, 4.6e-2 × on another), so it is judged against what sync_batch_norm promises to remove: the
    # same two processes without it land about as far away as the whole distance moved (measured 1.1 × moved).
    apart_synced, apart_own = _distance(synced, single), _distance(own, single)
    assert apart_own > 0.3 * moved, (apart_own, moved)
    assert apart_synced < 0.2 * apart_own, (apart_synced, apart_own, moved)
    assert torch.load(tmp_path / "ck2" / CHECKPOINT, weights_only=True)["identity"]["world_size"] == 2


@pytest.mark.parametrize("n", [36, 37, 39, 3, 1])
def test_epoch_shuffle_gives_every_world_size_the_same_global_batches(n):
    """The k-th batches of W ranks together are the k-th batch of one process with a W times larger batch."""
    from designer_resnet.training.distributed import DistInfo
    from designer_resnet.training.loaders import EpochShuffle

    def batches(world, rank, batch):
        sampler = EpochShuffle(n, seed=5, info=DistInfo(rank, world))
        sampler.set_epoch(3)
        order = list(sampler)
        assert len(order) == len(sampler) == max(1, n // world)
        return [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]

    for world in (2, 3, 4):
        single = batches(1, 0, 2 * world)
        ranks = [batches(world, r, 2) for r in range(world)]
        assert all(len(r) == len(ranks[0]) for r in ranks)  # every rank runs the same number of steps
        if n >= 2 * world:
            assert len(ranks[0]) == len(single) == n // (2 * world)
            for k, step in enumerate(zip(*ranks)):
                assert sorted(i for b in step for i in b) == sorted(single[k])
        assert set(i for r in range(world) for i in EpochShuffle(n, 5, DistInfo(r, world))) <= set(range(n))
    other = EpochShuffle(n, seed=5, info=DistInfo())
    other.set_epoch(4)
    if n > 3:
        first = EpochShuffle(n, seed=5, info=DistInfo())
        first.set_epoch(3)
        assert list(other) != list(first)  # a new order each epoch


def test_global_batch_norm_on_one_process_matches_batch_norm():
    """Outside DDP GlobalBatchNorm computes what BatchNorm does: outputs, gradients and running statistics."""
    from designer_resnet.training.batch_norm import GlobalBatchNorm, synchronise_batch_norm

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2), torch.nn.BatchNorm1d(2, momentum=None))
    converted = synchronise_batch_norm(copy.deepcopy(plain), torch.device("cpu"))
    assert [type(m) for m in converted if "Norm" in type(m).__name__] == [GlobalBatchNorm, GlobalBatchNorm]
    x = torch.randn(5, 3, 8, 8) * 3 + 2
    for step in range(3):
        outs = []
        for model in (plain, converted):
            model.train()
            model.zero_grad()
            out = model(x + step)
            out.square().sum().backward()
            outs.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
        assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(outs[0][1], outs[1][1]))
    for a, b in zip(plain.state_dict().values(), converted.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-6)
    plain.eval(), converted.eval()
    assert torch.allclose(plain(x), converted(x), atol=1e-5)
