"""The sweep pipeline: it loads in azure-ai-ml, its trials keep their processes per node, and it runs locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from azure.ai.ml import load_component, load_job

from designer_resnet.errors import UserError
from designer_resnet.runner.graph import load_pipeline
from designer_resnet.runner.run import _render_value, run_pipeline
from designer_resnet.runner.sweep import check_sweep, plan_trials

from conftest import REPO, convert_train_valid

SWEEP = REPO / "pipelines" / "image_classification_sweep.yml"
PLAIN = REPO / "pipelines" / "image_classification.yml"
SDK_SCRIPT = REPO / "pipelines" / "image_classification_sweep.py"
TRAIN_SPEC = REPO / "components" / "train_pytorch_model.yaml"
UPSTREAM = ("convert_train", "convert_test", "init_transformation", "transform_train", "transform_test", "split",
            "resnet")


def _copy(tmp_path, edit=None, name="sweep.yml"):
    """A copy of the sweep pipeline with absolute component paths, after `edit(train_job)`."""
    doc = yaml.safe_load(SWEEP.read_text())
    for job in doc["jobs"].values():
        for key in ("component", "trial"):
            if key in job:
                job[key] = str((SWEEP.parent / job[key]).resolve())
    if edit:
        edit(doc["jobs"]["train"])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _rest_node(job, name="train") -> dict:
    return job._to_rest_object().as_dict()["properties"]["jobs"][name]


def _trial_spec(node: dict) -> dict:
    trial = node["trial"]
    return trial["properties"]["componentSpec"] if "properties" in trial else trial


# ---- azure-ai-ml ----

def test_sweep_pipeline_loads_and_validates_without_the_private_flag():
    assert "AZURE_ML_INTERNAL_COMPONENTS_ENABLED" not in os.environ
    job = load_job(SWEEP)
    result = job._validate()
    assert result.passed, result.error_messages
    train = job.jobs["train"]
    assert train.type == "sweep" and "-m designer_resnet.components.train_pytorch_model " in train.trial.command
    assert (train.objective.goal, train.objective.primary_metric) == ("maximize", "top1")
    assert set(train.search_space) == {"learning_rate", "batch_size", "model_name"}
    assert train.early_termination.type == "bandit"
    assert train.limits.max_total_trials >= train.limits.max_concurrent_trials >= 1 and train.limits.timeout
    assert job.jobs["score"].inputs["trained_model"]._data == "${{parent.jobs.train.outputs.trained_model}}"


def test_sweep_pipeline_has_the_upstream_jobs_of_the_plain_pipeline():
    sweep, plain = (yaml.safe_load(p.read_text())["jobs"] for p in (SWEEP, PLAIN))
    assert {name: sweep[name] for name in UPSTREAM} == {name: plain[name] for name in UPSTREAM}


def test_yaml_sweep_trials_run_with_the_trial_components_distribution():
    """What a YAML sweep submits: the node count from the sweep's resources, processes per node from the trial."""
    node = _rest_node(load_job(SWEEP))
    assert node["type"] == "sweep" and "distribution" not in node
    assert node["resources"] == {"instance_count": "${{parent.inputs.node_count}}", "shm_size": "16g"}
    assert _trial_spec(node)["distribution"] == {"type": "pytorch", "process_count_per_instance": 1}
    assert node["objective"] == {"goal": "maximize", "primary_metric": "top1"}


def test_azure_ai_ml_keeps_no_processes_per_node_on_a_sweep():
    """The facts docs/sweeps.md builds on: `.sweep()` drops the node's distribution and resources, and a YAML
    sweep's trial, a file reference, cannot be changed with --set."""
    from azure.ai.ml import Input, dsl
    from azure.ai.ml.sweep import Choice

    train = load_component(TRAIN_SPEC)
    swept = {}

    @dsl.pipeline(default_compute="cpu-cluster")
    def pipeline(model, images):
        node = train(untrained_model=model, training_data=images, validation_data=images, batch_size=Choice([16, 32]))
        node.distribution = {"type": "pytorch", "process_count_per_instance": 4}
        node.resources = {"instance_count": 2}
        swept["node"] = node.sweep(primary_metric="top1", goal="maximize")

    pipeline(model=Input(type="uri_folder", path="m"), images=Input(type="uri_folder", path="i"))
    assert swept["node"].trial.distribution.process_count_per_instance == 1 and swept["node"].resources is None
    with pytest.raises(Exception, match="Cannot use '--set' on properties defined by reference strings"):
        load_job(SWEEP, params_override=[{"jobs.train.trial.distribution.process_count_per_instance": 4}])


@pytest.fixture
def sdk(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "pipelines"))
    import image_classification_sweep

    return image_classification_sweep


def test_sdk_sweep_trials_get_their_processes_per_node_in_the_rest_object(sdk):
    job = sdk.build_pipeline(sdk.parse_args(["--validate", "--nodes", "2", "--processes-per-node", "4"]))
    assert job._validate().passed
    node = _rest_node(job)
    assert node["type"] == "sweep" and node["computeId"] == "gpu-cluster"
    trial = _trial_spec(node)
    assert trial["distribution"] == {"type": "pytorch", "process_count_per_instance": 4}
    assert trial["resources"]["instance_count"] == 2
    assert node["resources"] == {"instance_count": 2, "shm_size": "16g"}
    sweep = yaml.safe_load(SWEEP.read_text())["jobs"]["train"]
    assert node["search_space"] == {k: (v if v["type"] != "choice" else {"values": v["values"], "type": "choice"})
                                    for k, v in sweep["search_space"].items()}
    assert node["objective"] == sweep["objective"] and node["sampling_algorithm"] == sweep["sampling_algorithm"]
    assert node["limits"] == sweep["limits"]
    score = _rest_node(job, "score")
    assert score["inputs"]["trained_model"]["value"] == "${{parent.jobs.train.outputs.trained_model}}"


def test_sdk_sweep_validates_offline_and_its_job_yaml_keeps_the_processes(tmp_path):
    out = tmp_path / "job.yml"
    env = {k: v for k, v in os.environ.items() if k != "AZURE_ML_INTERNAL_COMPONENTS_ENABLED"}
    result = subprocess.run([sys.executable, str(SDK_SCRIPT), "--validate", "--out", str(out), "--nodes", "3",
                             "--processes-per-node", "8"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipeline valid: 10 jobs" in result.stdout
    # The written job is a YAML `az ml job create --file` submits with the trial inline: its processes survive.
    node = _rest_node(load_job(out))
    assert _trial_spec(node)["distribution"]["process_count_per_instance"] == 8
    assert node["resources"]["instance_count"] == 3


def test_train_model_name_trains_another_architecture_of_the_same_family(tmp_path):
    """Train's optional model_name: what lets a sweep try architectures, since ResNet runs once upstream."""
    from designer_resnet.components.train_pytorch_model import main as train_main
    from designer_resnet.models.create import create_untrained_model

    data = convert_train_valid(tmp_path, 4, 2)
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    common = ["--untrained_model", tmp_path / "untrained", "--training_data", data / "train", "--validation_data",
              data / "valid", "--epochs", "1", "--batch_size", "4", "--workers", "0"]
    train_main([*map(str, common), "--model_name", "resnet34", "--trained_model", str(tmp_path / "m")])
    spec = (tmp_path / "m" / "model_spec.yaml").read_text()
    assert "model_name: resnet34" in spec and "resnet18" not in spec
    with pytest.raises(UserError, match=r"^model_name: densenet121 is a DenseNet, but the untrained model is a ResNet "
                                        r"\(resnet18\); choose a ResNet architecture or connect the DenseNet module's "
                                        r"output$"):
        train_main([*map(str, common), "--model_name", "densenet121", "--trained_model", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()


# ---- the local runner ----

def _plan(tmp_path, max_trials, edit=None):
    node = load_pipeline(_copy(tmp_path, edit)).nodes["train"]
    return plan_trials(check_sweep(node), max_trials, _render_value)


def test_sampling_is_seeded_and_trial_k_does_not_depend_on_the_count(tmp_path):
    four, again, six = _plan(tmp_path, 4), _plan(tmp_path, 4), _plan(tmp_path, 6)
    draws = [t.sampled for t in four.trials]
    assert draws == [t.sampled for t in again.trials] == [t.sampled for t in six.trials][:4]
    assert len({json.dumps(d) for d in draws}) == 4
    for d in draws:
        assert 0.0001 <= float(d["learning_rate"]) <= 0.1 and d["batch_size"] in ("16", "32", "64")
    other = _plan(tmp_path, 4, lambda job: job["sampling_algorithm"].update(seed=7))
    assert [t.sampled for t in other.trials] != draws
    capped = _plan(tmp_path, 50, lambda job: job["limits"].update(max_total_trials=3))
    assert len(capped.trials) == 3
    grid = _plan(tmp_path, 50, lambda job: job.update(sampling_algorithm="grid", search_space={
        "batch_size": {"type": "choice", "values": [16, 32]},
        "model_name": {"type": "choice", "values": ["resnet18", "resnet50"]}}))
    assert [t.sampled for t in grid.trials] == [{"batch_size": "16", "model_name": "resnet18"},
                                                 {"batch_size": "16", "model_name": "resnet50"},
                                                 {"batch_size": "32", "model_name": "resnet18"},
                                                 {"batch_size": "32", "model_name": "resnet50"}]


def _set(path, value):
    def edit(job):
        target = job
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


BAD = {
    "unknown distribution": (_set(("search_space", "learning_rate", "type"), "log_uniform"),
                             r"search_space\.learning_rate: type 'log_uniform' is not a distribution Azure ML knows"),
    "empty choice": (_set(("search_space", "batch_size", "values"), []),
                     r"search_space\.batch_size: choice needs a non-empty list of values"),
    "metric not logged": (_set(("objective", "primary_metric"), "accuracy"),
                          r"objective\.primary_metric is 'accuracy', which train_pytorch_model does not log.*top1"),
    "bad goal": (_set(("objective", "goal"), "maximise"),
                 r"objective\.goal is 'maximise'; it must be maximize or minimize"),
    "not a trial input": (_set(("search_space", "lr"), {"type": "choice", "values": [0.1]}),
                          r"search_space\.lr: 'lr' is not an input of the trial.*trial's parameters are"),
    "a port": (_set(("search_space", "training_data"), {"type": "choice", "values": ["x"]}),
               r"search_space\.training_data: 'training_data' is a folder port"),
    "choice out of range": (_set(("search_space", "batch_size", "values"), [16, 0]),
                            r"search_space\.batch_size: 0 is outside the valid range \[1, 65536\] \(a value of its "
                            r"choice"),
    "bound out of range": (_set(("search_space", "learning_rate", "max_value"), 3.0),
                           r"search_space\.learning_rate: 20\.08\d* is outside the valid range"),
    "draw out of range": (_set(("search_space", "learning_rate"), {"type": "normal", "mu": 0.0, "sigma": 1.0}),
                          r"job 'train' input 'learning_rate' \(from jobs\.train\.search_space\.learning_rate, "
                          r"trial \d\): -?\d"),
    "node distribution": (_set(("distribution",), {"type": "pytorch", "process_count_per_instance": 4}),
                          r"a sweep node has no distribution"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_definition_is_refused_before_anything_runs(tmp_path, case):
    edit, message = BAD[case]
    with pytest.raises(UserError, match=message):
        run_pipeline(_copy(tmp_path, edit), {"train_images": str(tmp_path), "test_images": str(tmp_path)},
                     runs_dir=tmp_path / "runs", max_trials=10)
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_definition_is_one_error_line_and_exit_1(tmp_path):
    bad = _copy(tmp_path, BAD["unknown distribution"][0])
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "run", str(bad), "--runs-dir",
                             str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: pipeline: job 'train': search_space.learning_rate: type ")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The sweep pipeline on 300 sample digits: resnet18 or resnet34 from scratch, 1 epoch, 4 trials."""
    from designer_resnet.data.sample import write_digits

    root = tmp_path_factory.mktemp("sweep")
    write_digits(root / "train", limit=300, test_folder=root / "test")
    pipeline = _copy(root, _set(("search_space", "model_name", "values"), ["resnet18", "resnet34"]))
    overrides = {"train_images": str(root / "train"), "test_images": str(root / "test"), "model_name": "resnet18",
                 "pretrained": "false", "epochs": "1", "resize_size": "32", "crop_size": "32",
                 "horizontal_flip": "false"}
    lines: list[str] = []
    result = run_pipeline(pipeline, overrides, runs_dir=root / "runs", max_trials=4, echo=lines.append)
    return root, pipeline, overrides, result, lines


def test_local_sweep_runs_its_trials_and_the_best_feeds_score(local_sweep):
    root, _, _, result, lines = local_sweep
    sweep = result.sweeps["train"]
    assert [t.number for t in sweep.trials] == [1, 2, 3, 4] and all(t.metric is not None for t in sweep.trials)
    best = max(sweep.trials, key=lambda t: t.metric)
    assert sweep.best == best.number and result.nodes["train"].folder == best.folder
    assert any(line.startswith(f"[8/10] train: best trial {best.number} (top1 {best.metric:.4f}") for line in lines)
    for trial in sweep.trials:  # each trial ran with its own drawn values, and its model is that architecture
        log = (trial.folder / "log.txt").read_text()
        assert f"--learning_rate {trial.sampled['learning_rate']} --" in log
        assert f"--batch_size {trial.sampled['batch_size']} " in log
        spec = (trial.folder / "trained_model" / "model_spec.yaml").read_text()
        assert f"model_name: {trial.sampled['model_name']}" in spec
    assert str(best.folder / "trained_model") in (result.nodes["score"].folder / "log.txt").read_text()
    summary = json.loads((result.run_dir / "train" / "sweep.json").read_text())
    assert summary["best_trial"] == best.number and [t["metric"] for t in summary["trials"]] == [
        t.metric for t in sweep.trials]


def test_local_sweep_trials_share_upstream_jobs_and_a_rerun_reuses_them(local_sweep):
    root, pipeline, overrides, first, lines = local_sweep
    for name in UPSTREAM:  # each upstream job ran once, and every trial read its outputs
        assert sum(line.startswith(f"[") and f" {name}: ok (" in line for line in lines) == 1
    for trial in first.sweeps["train"].trials:
        assert str(first.nodes["resnet"].folder / "output_path") in (trial.folder / "log.txt").read_text()
    more: list[str] = []
    again = run_pipeline(pipeline, overrides, runs_dir=root / "runs", max_trials=5, echo=more.append)
    assert all(again.nodes[name].reused for name in UPSTREAM)
    trials = again.sweeps["train"].trials
    assert [t.reused for t in trials] == [True, True, True, True, False]
    assert [t.sampled for t in trials[:4]] == [t.sampled for t in first.sweeps["train"].trials]
    reused = [line for line in more if f"reused from {first.run_dir.name}" in line]
    assert {line.split(": reused")[0].split()[-1] for line in reused} >= set(UPSTREAM)
    assert sum(line.startswith("    trial ") for line in reused) == 4
