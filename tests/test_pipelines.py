"""Pipeline definitions in both flavours: they load in azure-ai-ml, connect ports of one type, and run locally."""

from __future__ import annotations

import os

import pytest
import yaml
from azure.ai.ml import load_job
from PIL import Image

from designer_resnet.errors import UserError
from designer_resnet.runner.graph import check_port_types, load_pipeline, topological_order
from designer_resnet.specs import accepts

from conftest import REPO, write_labelled_set

PIPELINE = REPO / "pipelines" / "image_classification.yml"
TYPED_PIPELINE = REPO / "pipelines" / "image_classification_typed.yml"


def test_v2_pipeline_loads_and_validates_without_the_private_flag():
    assert "AZURE_ML_INTERNAL_COMPONENTS_ENABLED" not in os.environ
    job = load_job(PIPELINE)
    result = job._validate()
    assert result.passed, result.error_messages
    train = job.jobs["train"]
    assert train.type == "command" and train.distribution.type == "pytorch"
    assert train.compute in ("gpu-cluster", "azureml:gpu-cluster") and job.settings.default_compute == "cpu-cluster"
    assert set(job.inputs) >= {"train_images", "test_images", "model_name", "pretrained", "epochs", "batch_size",
                               "node_count"}
    assert job.outputs["trained_model"].type == "mlflow_model"


@pytest.mark.parametrize("path", [PIPELINE, TYPED_PIPELINE], ids=["v2", "typed"])
def test_every_connection_joins_ports_of_the_same_type(path):
    pipeline = load_pipeline(path)
    check_port_types(pipeline)
    links = [(n.name, port, src, out) for n in pipeline.nodes.values() for port, src, out in n.upstream()]
    assert ("train", "untrained_model", "resnet", "output_path") in links
    assert len(links) == 11
    for node, port, src, out in links:
        assert accepts(pipeline.nodes[node].port_type("inputs", port), pipeline.nodes[src].port_type("outputs", out))
    assert pipeline.nodes["train"].port_type("inputs", "untrained_model") == "UntrainedModelDirectory or ModelDirectory"
    order = topological_order(pipeline)
    assert order.index("resnet") < order.index("train") < order.index("score") < order.index("evaluate")


def _rewired(tmp_path, job: str, port: str, source: str, pipeline=PIPELINE):
    """A copy of a pipeline with one input connected to `source` (job.output)."""
    doc = yaml.safe_load(pipeline.read_text())
    doc["jobs"][job]["inputs"][port] = "${{parent.jobs.%s}}" % source.replace(".", ".outputs.")
    for node in doc["jobs"].values():
        node["component"] = node["component"].replace("../", f"{REPO}/")
    path = tmp_path / "rewired.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("pipeline", [PIPELINE, TYPED_PIPELINE], ids=["v2", "typed"])
def test_mistyped_connection_is_refused_naming_both_ends(tmp_path, pipeline):
    """In v2 both ends are uri_folder; the designer types named in the port descriptions still disagree."""
    bad = _rewired(tmp_path, "train", "untrained_model", "split.output_path1", pipeline)
    with pytest.raises(UserError, match=r"split\.output_path1 \(ImageDirectory\) cannot connect to "
                                        r"train\.untrained_model \(UntrainedModelDirectory or ModelDirectory\)"):
        check_port_types(load_pipeline(bad))


# ---- the local runner ----

import subprocess  # noqa: E402
import sys  # noqa: E402

from designer_resnet.directories.dataframe_directory import read_dataframe_directory  # noqa: E402
from designer_resnet.runner.run import parse_overrides, run_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The full pipeline on 3 generated classes (10 images each, 32×32), resnet18, 1 epoch."""
    root = tmp_path_factory.mktemp("pipeline")
    write_labelled_set(root / "train_images", 10, seed=0)
    write_labelled_set(root / "test_images", 4, seed=1)
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


def test_typed_pipeline_runs_locally_and_scores_as_the_v2_one(local_run):
    """The runner renders either flavour's commands; same seeds, same data: the same scores."""
    root, overrides, v2_result, _ = local_run
    lines: list[str] = []
    typed = run_pipeline(TYPED_PIPELINE, overrides, runs_dir=root / "runs_typed", echo=lines.append)
    assert lines[-1].startswith("[10/10] evaluate: ok")
    scored = [read_dataframe_directory(r.nodes["score"].folder / "scored_dataset") for r in (v2_result, typed)]
    assert scored[0].equals(scored[1])
    # Azure's rendering of a Boolean default, and of a value given on the command line as it was typed
    assert "--zero_init_residual False " in (typed.nodes["resnet"].folder / "log.txt").read_text()
    assert "--epochs 1 " in (typed.nodes["train"].folder / "log.txt").read_text()


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


@pytest.mark.parametrize("flavour", ["v2", "typed"])
def test_sdk_pipeline_validates_offline_and_writes_the_job(tmp_path, flavour):
    out = tmp_path / "job.yml"
    env = {k: v for k, v in os.environ.items() if k != "AZURE_ML_INTERNAL_COMPONENTS_ENABLED"}
    result = subprocess.run([sys.executable, str(SDK_SCRIPT), "--validate", "--out", str(out), "--model-name", "resnet50",
                             "--nodes", "2", "--processes-per-node", "4", "--flavour", flavour],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipeline valid: 10 jobs" in result.stdout
    job = yaml.safe_load(out.read_text())
    assert job["type"] == "pipeline" and len(job["jobs"]) == 10
    suffix = "_typed" if flavour == "typed" else ""
    train = next(j for j in job["jobs"].values() if j["component"]["name"] == f"train_pytorch_model{suffix}")
    assert train["distribution"]["process_count_per_instance"] == 4 and train["resources"]["instance_count"] == 2
    assert train["resources"]["shm_size"] == "16g"  # room in /dev/shm for the loader workers' batches
    assert train["type"] == ("DistributedComponent" if flavour == "typed" else "command")
    resnet = next(j for j in job["jobs"].values() if j["component"]["name"] == f"resnet{suffix}")
    assert resnet["inputs"]["model_name"] == "resnet50"


def test_sdk_submit_without_a_workspace_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SDK_SCRIPT), "--submit"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in result.stderr.splitlines() if "error" in line.lower()] and len(errors) == 1
    assert "pass --subscription, --resource-group and --workspace" in errors[0]


@pytest.mark.parametrize("typed", [False, True], ids=["v2", "typed"])
def test_register_dry_run_lists_every_component(typed):
    extra = ["--typed"] if typed else []
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register", "--dry-run", *extra],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("would register")]
    names = sorted(line.split()[2].split(":")[0] for line in lines)
    suffix = "_typed" if typed else ""
    pipelines = [] if typed else [yaml.safe_load(p.read_text())["name"] for p in (REPO / "components" / "pipeline").glob("*.yaml")]
    assert names == sorted([p.stem + suffix for p in (REPO / "src" / "designer_resnet" / "components").glob("*.yaml")]
                           + pipelines)
    kind = "DistributedComponent" if typed else "command"
    assert f"would register train_pytorch_model{suffix}:0.1.0 ({kind})" in result.stdout


def test_register_points_a_typed_folder_without_the_flag_at_typed():
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register", "--dry-run", "--components-dir",
                             str(REPO / "components" / "typed")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "need --typed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_register_without_a_workspace_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no workspace" in errors[0] and "--workspace" in errors[0]


class _Workspace:
    """Stands in for MLClient.components: a workspace where versions, once registered, never change."""

    def __init__(self):
        self.registered: dict[tuple[str, str], str] = {}

    def create_or_update(self, component):
        from azure.core.exceptions import HttpResponseError

        key, content = (component.name, component.version), component.description
        if self.registered.get(key, content) != content:
            error = HttpResponseError(message="Component version already exists with different content")
            error.status_code = 409
            raise error
        self.registered[key] = content
        return component


def test_register_leaves_unchanged_versions_and_refuses_changed_ones_in_one_line():
    from types import SimpleNamespace

    from azure.ai.ml import load_component

    from designer_resnet.register import register_one

    client = SimpleNamespace(components=_Workspace())
    component = load_component(REPO / "components" / "resnet.yaml")
    assert register_one(client, component) == "resnet:0.1.0"
    assert register_one(client, component) == "resnet:0.1.0"  # again, unchanged: fine
    component.description += " Changed."
    with pytest.raises(UserError, match=r"refused resnet:0\.1\.0 \(409: Component version already exists.*raise "
                                        r"__version__ in src/designer_resnet/__init__\.py"):
        register_one(client, component)
