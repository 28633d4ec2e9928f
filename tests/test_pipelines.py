"""Pipeline definitions: they load in azure-ai-ml, and every connection joins ports of one type."""

from __future__ import annotations

import pytest
import yaml
from azure.ai.ml import load_job
from PIL import Image

from designer_resnet.errors import UserError
from designer_resnet.runner.graph import check_port_types, load_pipeline, topological_order

from conftest import REPO

PIPELINE = REPO / "pipelines" / "image_classification.yml"


def test_pipeline_yaml_loads_and_validates_offline():
    import azure.ai.ml._internal  # noqa: F401  (internal node types in pipelines)

    job = load_job(PIPELINE)
    result = job._validate()
    assert result.passed, result.error_messages
    assert list(job.jobs) == ["convert_train", "convert_test", "init_transformation", "transform_train",
                              "transform_test", "split", "resnet", "train", "score", "evaluate"]
    train = job.jobs["train"]
    assert train.type == "DistributedComponent" and train.distribution["type"] == "pytorch"
    assert train.compute == "azureml:gpu-cluster" and job.settings.default_compute == "cpu-cluster"
    assert set(job.inputs) >= {"train_images", "test_images", "model_name", "pretrained", "epochs", "batch_size",
                               "node_count"}


def test_every_connection_joins_ports_of_the_same_type():
    pipeline = load_pipeline(PIPELINE)
    check_port_types(pipeline)
    links = [(n.name, port, src, out) for n in pipeline.nodes.values() for port, src, out in n.upstream()]
    assert ("train", "untrained_model", "resnet", "output_path") in links
    assert len(links) == 11
    for node, port, src, out in links:
        wanted = pipeline.nodes[node].port_type("inputs", port)
        assert wanted == pipeline.nodes[src].port_type("outputs", out) or wanted == "AnyDirectory"
    order = topological_order(pipeline)
    assert order.index("resnet") < order.index("train") < order.index("score") < order.index("evaluate")


def _rewired(tmp_path, job: str, port: str, source: str):
    """A copy of the pipeline with one input connected to `source` (job.output)."""
    doc = yaml.safe_load(PIPELINE.read_text())
    doc["jobs"][job]["inputs"][port] = "${{parent.jobs.%s}}" % source.replace(".", ".outputs.")
    for node in doc["jobs"].values():
        node["component"] = node["component"].replace("file:../", f"file:{REPO}/")
    path = tmp_path / "rewired.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_mistyped_connection_is_refused_naming_both_ends(tmp_path):
    bad = _rewired(tmp_path, "train", "untrained_model", "split.output_path1")
    with pytest.raises(UserError, match=r"split\.output_path1 \(ImageDirectory\) cannot connect to "
                                        r"train\.untrained_model \(UntrainedModelDirectory\)"):
        check_port_types(load_pipeline(bad))


# ---- the local runner ----

import subprocess  # noqa: E402
import sys  # noqa: E402

from designer_resnet.directories.dataframe_directory import read_dataframe_directory  # noqa: E402
from designer_resnet.runner.run import parse_overrides, run_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The full pipeline on 3 generated classes (10 images each, 32×32), resnet18, 1 epoch."""
    from test_train import _write_set

    root = tmp_path_factory.mktemp("pipeline")
    _write_set(root / "train_images", 10, seed=0)
    _write_set(root / "test_images", 4, seed=1)
    overrides = {"train_images": str(root / "train_images"), "test_images": str(root / "test_images"),
                 "model_name": "resnet18", "pretrained": "false", "epochs": "1", "batch_size": "8",
                 "resize_size": "32", "crop_size": "32", "train_fraction": "0.8"}
    lines: list[str] = []
    result = run_pipeline(PIPELINE, overrides, runs_dir=root / "runs", echo=lines.append)
    return root, overrides, result, lines


def test_local_runner_runs_the_whole_pipeline(local_run):
    root, _, result, lines = local_run
    assert list(result.nodes) and all(not n.reused for n in result.nodes.values())
    evaluation = result.nodes["evaluate"].folder / "evaluation_results"
    table = read_dataframe_directory(evaluation)
    assert table["Dataset"].tolist() == ["Scored dataset"] and 0.0 <= table["Overall Accuracy"].iloc[0] <= 1.0
    assert (evaluation / "confusion_matrix.png").exists()
    scored = read_dataframe_directory(result.nodes["score"].folder / "scored_dataset")
    assert len(scored) == 12 and list(scored.columns[:3]) == ["id", "category", "Scored Labels"]
    for name in ("convert_train", "train", "evaluate"):
        log = (result.nodes[name].folder / "log.txt").read_text()
        assert log.startswith("$ ") and str(result.nodes[name].folder) in str(result.run_dir / name)
    assert lines[-1].startswith("[10/10] evaluate: ok")


def test_unchanged_rerun_reuses_every_node(local_run):
    root, overrides, first, _ = local_run
    lines: list[str] = []
    again = run_pipeline(PIPELINE, overrides, runs_dir=root / "runs", echo=lines.append)
    assert all(n.reused for n in again.nodes.values())
    assert again.nodes["train"].folder == first.nodes["train"].folder
    changed = run_pipeline(PIPELINE, {**overrides, "epochs": "2"}, runs_dir=root / "runs", echo=lines.append)
    assert changed.nodes["split"].reused and not changed.nodes["train"].reused
    assert not changed.nodes["score"].reused and not changed.nodes["evaluate"].reused


def test_changed_images_in_the_same_folder_are_not_reused(local_run):
    root, overrides, _, _ = local_run
    image = sorted((root / "test_images" / "a").iterdir())[0]
    Image.new("RGB", (32, 32), (1, 2, 3)).save(image)
    lines: list[str] = []
    rerun = run_pipeline(PIPELINE, overrides, runs_dir=root / "runs", echo=lines.append)
    assert rerun.nodes["convert_train"].reused and rerun.nodes["train"].reused
    assert not rerun.nodes["convert_test"].reused and not rerun.nodes["score"].reused


def test_failing_node_stops_the_run_with_its_log_tail(local_run):
    root, overrides, _, _ = local_run
    lines: list[str] = []
    with pytest.raises(UserError, match=r"job 'train' failed with exit code 1; full log: .*train/log.txt"):
        run_pipeline(PIPELINE, {**overrides, "batch_size": "500"}, runs_dir=root / "runs", echo=lines.append)
    text = "\n".join(lines)
    assert "train: FAILED (exit 1" in text and "batch_size: 500 is larger than the training set" in text
    assert not any(line.startswith("[9/10]") for line in lines)  # nothing after the failed node


def test_bad_inputs_are_refused_before_running(tmp_path):
    with pytest.raises(UserError, match="is Azure data; run locally with --set inputs.train_images=<local folder>"):
        run_pipeline(PIPELINE, {}, runs_dir=tmp_path / "runs")
    with pytest.raises(UserError, match="the pipeline has no input 'epoch'"):
        run_pipeline(PIPELINE, {"epoch": "3"}, runs_dir=tmp_path / "runs")
    with pytest.raises(UserError, match="must look like inputs.NAME=VALUE"):
        parse_overrides(["epochs=3"])
    assert not (tmp_path / "runs").exists()


def test_mistyped_pipeline_is_refused_before_any_job_runs(tmp_path):
    bad = _rewired(tmp_path, "score", "trained_model", "resnet.output_path")
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "run", str(bad), "--runs-dir",
                             str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: pipeline: resnet.output_path (UntrainedModelDirectory) cannot connect to "
                                     "score.trained_model (ModelDirectory); connect an output of type ModelDirectory")
    assert not (tmp_path / "runs").exists()


# ---- the SDK pipeline ----

SDK_SCRIPT = REPO / "pipelines" / "image_classification.py"


def test_sdk_pipeline_validates_offline_and_writes_the_job(tmp_path):
    out = tmp_path / "job.yml"
    result = subprocess.run([sys.executable, str(SDK_SCRIPT), "--validate", "--out", str(out), "--model-name", "resnet50",
                             "--nodes", "2", "--processes-per-node", "4"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipeline valid: 10 jobs" in result.stdout
    job = yaml.safe_load(out.read_text())
    assert job["type"] == "pipeline" and len(job["jobs"]) == 10
    train = next(j for j in job["jobs"].values() if j["component"]["name"] == "train_pytorch_model")
    assert train["distribution"]["process_count_per_instance"] == 4 and train["resources"]["instance_count"] == 2
    resnet = next(j for j in job["jobs"].values() if j["component"]["name"] == "resnet")
    assert resnet["inputs"]["model_name"] == "resnet50"


def test_sdk_submit_without_a_workspace_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SDK_SCRIPT), "--submit"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in result.stderr.splitlines() if "error" in line.lower()] and len(errors) == 1
    assert "pass --subscription, --resource-group and --workspace" in errors[0]


def test_register_dry_run_lists_every_component(tmp_path):
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register", "--dry-run"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(line.split()[2].split(":")[0] for line in result.stdout.splitlines() if line.startswith("would register"))
    assert names == sorted(p.stem for p in (REPO / "components").glob("*.yaml"))
    assert "would register train_pytorch_model:0.1.0 (DistributedComponent)" in result.stdout


def test_register_without_a_workspace_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no workspace" in errors[0] and "--workspace" in errors[0]
