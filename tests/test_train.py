"""Train PyTorch Model: outputs, determinism, DDP, resume, errors, and a real-data run."""

from __future__ import annotations

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
from designer_resnet.training.data import ImageDataset
from designer_resnet.training.train import CHECKPOINT, TrainConfig, train
from designer_resnet.transforms.ops import tensor_pipeline

from conftest import REPO, write_labelled_set as _write_set

@pytest.fixture
def tiny(tmp_path):
    """3 classes: 8 training and 3 validation images each (32×32), and an untrained resnet18."""
    _write_set(tmp_path / "raw_train", 8, seed=0)
    _write_set(tmp_path / "raw_valid", 3, seed=1)
    convert_to_image_directory(tmp_path / "raw_train", tmp_path / "train")
    convert_to_image_directory(tmp_path / "raw_valid", tmp_path / "valid")
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
    return torch.stack([ds[i][0] for i in range(len(ds))]), trained


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


def test_two_process_torchrun_trains_with_gloo(tiny):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *_train_cli(tiny, tiny / "ddp", "--epochs", "2")[1:]]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    spec = yaml.safe_load((tiny / "ddp" / "model_spec.yaml").read_text())
    assert spec["designer_resnet"]["training"]["world_size"] == 2
    trained = read_trained(tiny / "ddp")
    assert trained.categories == ["a", "b", "c"]
    assert trained.model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert result.stdout.count("trained 2 epoch(s)") == 1  # only rank 0 reports and writes


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    _write_set(tmp_path / "raw_train", 32, size=(64, 64), seed=0)
    _write_set(tmp_path / "raw_valid", 4, size=(64, 64), seed=1)
    convert_to_image_directory(tmp_path / "raw_train", tmp_path / "train")
    convert_to_image_directory(tmp_path / "raw_valid", tmp_path / "valid")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    epochs = ["--epochs", "5", "--patience", "10"]

    whole = subprocess.run(_train_cli(tmp_path, tmp_path / "whole", *epochs, "--checkpoint_path", str(tmp_path / "ck_whole")),
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    ckpt_dir = tmp_path / "ck_resumed"
    proc = subprocess.Popen(_train_cli(tmp_path, tmp_path / "resumed", *epochs, "--checkpoint_path", str(ckpt_dir)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (ckpt_dir / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt_dir / CHECKPOINT, weights_only=True)["epoch"]
    assert 1 <= killed_at < 5, "the run finished before it could be killed; make the epochs slower"
    # Nothing half-written: at most our hidden staging folder, no port files.
    assert all(p.name.startswith(".designer-resnet-") for p in (tmp_path / "resumed").iterdir())

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


def test_model_directories_that_are_not_ours_are_refused(tiny):
    with pytest.raises(UserError, match="untrained_model: expected UntrainedModelDirectory but .* ImageDirectory"):
        train(tiny / "train", tiny / "train", tiny / "valid", tiny / "out", _cfg())
    train(tiny / "untrained", tiny / "train", tiny / "valid", tiny / "trained", _cfg(epochs=1))
    with pytest.raises(UserError, match="is a trained model; connect the output of the ResNet or DenseNet module"):
        train(tiny / "trained", tiny / "train", tiny / "valid", tiny / "out", _cfg())


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
    import os

    home, cwd = tiny / "home", tiny / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "XDG_")) and k not in ("MPLCONFIGDIR", "DO_NOT_TRACK")}
    # MLflow keeps its telemetry off by itself under pytest or CI; the run must not depend on that.
    for name in ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "JENKINS_URL", "BUILDKITE",
                 "CIRCLECI", "TRAVIS"):
        env.pop(name, None)
    env["HOME"] = str(home)
    result = subprocess.run(_train_cli(tiny, tiny / "out", "--epochs", "1"), cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert list(cwd.iterdir()) == []
    assert (tiny / "out" / "training_metrics.csv").exists() and (tiny / "out" / "training_curves.png").exists()
