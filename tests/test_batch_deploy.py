"""Batch scoring on Azure: the pipeline component, the batch endpoint and deployment, the SDK pipeline, the driver.

azure-ai-ml reads the specs in a process of its own with AZURE_ML_INTERNAL_COMPONENTS_ENABLED
unset, as `az ml` would for a user who never set it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_specs import _copy_for_generation

FLAG = "AZURE_ML_INTERNAL_COMPONENTS_ENABLED"
PIPELINE = REPO / "pipelines" / "batch_scoring.yml"
COMPONENT = REPO / "components" / "pipeline" / "batch_scoring.yaml"
PARALLEL = REPO / "components" / "parallel" / "score_image_model_parallel.yaml"
DEPLOY = REPO / "deploy"
SDK_SCRIPT = REPO / "pipelines" / "batch_scoring.py"
MODEL_INPUT = "${{parent.inputs.trained_model}}"

PROBE = r'''
import json, os, sys
from azure.ai.ml import load_batch_endpoint, load_component, load_job
from azure.ai.ml.entities._load_functions import load_pipeline_component_batch_deployment

def value(v):
    data = getattr(v, "_data", v)
    return {"type": data.type, "path": data.path} if hasattr(data, "path") else (None if data is None else str(data))

def nodes(jobs):
    return {name: {"type": n.type, "component": n.component.display_name, "compute": n.compute,
                   "inputs": {k: value(v) for k, v in n.inputs.items()},
                   "outputs": {k: value(v) for k, v in n.outputs.items()},
                   "mini_batch_size": getattr(n, "mini_batch_size", None) if n.type == "parallel" else None,
                   "max_concurrency_per_instance": getattr(n, "max_concurrency_per_instance", None)
                                                   if n.type == "parallel" else None,
                   "resources": {k: v for k, v in dict(n.resources).items() if v is not None}
                                if getattr(n, "resources", None) else None}
            for name, n in jobs.items()}

def checked(entity):
    result = entity._validate()
    return {"valid": result.passed, "errors": str(result.error_messages)}

component_path, pipeline_path, endpoint_path, deployment_path = sys.argv[1:]
component = load_component(component_path)
pipeline = load_job(pipeline_path)
endpoint = load_batch_endpoint(endpoint_path)
deployment = load_pipeline_component_batch_deployment(deployment_path)
deployment._validate()  # raises on a bad output action
print(json.dumps({
    "flag": os.environ.get("AZURE_ML_INTERNAL_COMPONENTS_ENABLED"),
    "component": {"name": component.name, "version": str(component.version), "type": component.type,
                  "inputs": {k: {"type": v.type, "default": v.default} for k, v in component.inputs.items()},
                  "outputs": {k: v.type for k, v in component.outputs.items()},
                  "jobs": nodes(component.jobs), **checked(component)},
    "pipeline": {"jobs": nodes(pipeline.jobs), **checked(pipeline)},
    "endpoint": {"class": type(endpoint).__name__, "name": endpoint.name, "auth_mode": endpoint.auth_mode},
    "deployment": {"class": type(deployment).__name__, "name": deployment.name, "type": deployment.type,
                   "endpoint_name": deployment.endpoint_name, "settings": deployment.settings,
                   "component_class": type(deployment.component).__name__,
                   "jobs": nodes(deployment.component.jobs), **checked(deployment.component)},
}, default=str))
'''


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def probe() -> dict:
    """What azure-ai-ml reads from the pipeline component, the pipeline, the endpoint and the deployment."""
    env = {k: v for k, v in os.environ.items() if k != FLAG}
    paths = [COMPONENT, PIPELINE, DEPLOY / "batch-endpoint.yml", DEPLOY / "batch-deployment.yml"]
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, paths)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("generate", REPO / "components" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the pipeline component ----

def test_pipeline_component_loads_and_validates_without_the_private_flag(probe):
    from designer_resnet import __version__

    assert probe["flag"] is None
    component = probe["component"]
    assert component["valid"], component["errors"]
    assert (component["name"], component["version"], component["type"]) == (
        "designer_resnet_batch_scoring", __version__, "pipeline")
    assert probe["pipeline"]["valid"], probe["pipeline"]["errors"]


def test_pipeline_component_inputs_are_the_pipelines_without_paths(probe):
    pipeline = _yaml(PIPELINE)
    expected = {}
    for name, value in pipeline["inputs"].items():
        if isinstance(value, dict):
            if value["type"] != "mlflow_model":  # the model is bound in the jobs: a batch endpoint takes no model
                expected[name] = {"type": value["type"], "default": None}
        else:
            expected[name] = {"type": {int: "integer", str: "string"}[type(value)], "default": value}
    assert probe["component"]["inputs"] == expected
    assert probe["component"]["inputs"]["mini_batch_size"] == {"type": "string", "default": "256"}
    assert probe["component"]["outputs"] == {k: v["type"] for k, v in pipeline["outputs"].items()}
    raw = _yaml(COMPONENT)
    assert "settings" not in raw and "experiment_name" not in raw


def test_pipeline_component_jobs_are_the_pipelines_jobs(probe):
    """One graph: the same nodes, components, bindings and node settings; only the model is bound in place."""
    model = _yaml(PIPELINE)["inputs"]["trained_model"]
    component_jobs, pipeline_jobs = copy.deepcopy(probe["component"]["jobs"]), copy.deepcopy(probe["pipeline"]["jobs"])
    assert list(component_jobs) == list(pipeline_jobs) == ["convert", "score", "merge"]
    bound = component_jobs["score"]["inputs"].pop("trained_model")
    assert pipeline_jobs["score"]["inputs"].pop("trained_model") == MODEL_INPUT
    assert bound["type"] == model["type"]
    assert bound["path"].removeprefix("azureml:") == model["path"].removeprefix("azureml:")
    assert component_jobs == pipeline_jobs
    score = component_jobs["score"]
    assert score["type"] == "parallel" and score["compute"] in ("gpu-cluster", "azureml:gpu-cluster")
    assert score["mini_batch_size"] == "${{parent.inputs.mini_batch_size}}"
    assert score["resources"] == {"instance_count": "${{parent.inputs.node_count}}"}
    assert score["max_concurrency_per_instance"] == "${{parent.inputs.processes_per_node}}"


def test_pipeline_component_names_the_same_spec_files_as_the_pipeline():
    component, pipeline = _yaml(COMPONENT), _yaml(PIPELINE)
    for name, job in pipeline["jobs"].items():
        assert (COMPONENT.parent / component["jobs"][name]["component"]).resolve() == \
               (PIPELINE.parent / job["component"]).resolve()


def test_generator_follows_the_batch_pipeline_and_reports_an_orphan(tmp_path):
    root = _copy_for_generation(tmp_path)
    generate = [sys.executable, str(root / "components" / "generate.py")]
    pipeline = root / "pipelines" / "batch_scoring.yml"
    pipeline.write_text(pipeline.read_text().replace('mini_batch_size: "256"', 'mini_batch_size: "128"'))
    stale = subprocess.run([*generate, "--check"], capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and "stale: components/pipeline/batch_scoring.yaml" in stale.stdout
    assert subprocess.run(generate, capture_output=True, timeout=120).returncode == 0
    component = _yaml(root / "components" / "pipeline" / "batch_scoring.yaml")
    assert component["inputs"]["mini_batch_size"] == {"type": "string", "default": "128"}
    orphan = root / "components" / "pipeline" / "old_scoring.yaml"
    orphan.write_text("name: old\n")
    check = subprocess.run([*generate, "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "stale: components/pipeline/old_scoring.yaml" in check.stdout
    assert subprocess.run(generate, capture_output=True, timeout=120).returncode == 0
    assert not orphan.exists()


# ---- the batch endpoint and deployment ----

def test_batch_endpoint_uses_entra_tokens(probe):
    assert probe["endpoint"] == {"class": "BatchEndpoint", "name": "designer-resnet-batch", "auth_mode": "aad_token"}


def test_batch_deployment_deploys_the_pipeline_component_on_the_gpu_cluster(probe):
    deployment = probe["deployment"]
    assert deployment["class"] == "PipelineComponentBatchDeployment" and deployment["type"] == "pipeline"
    assert deployment["endpoint_name"] == probe["endpoint"]["name"]
    assert deployment["settings"] == {"default_compute": "gpu-cluster", "continue_on_step_failure": False}
    assert deployment["component_class"] == "PipelineComponent"
    assert deployment["valid"], deployment["errors"]
    assert deployment["jobs"] == probe["component"]["jobs"]
    assert _yaml(DEPLOY / "batch-deployment.yml")["component"] == "../components/pipeline/batch_scoring.yaml"


def test_batch_inputs_file_names_the_deployments_inputs_with_their_types():
    from azure.ai.ml import Input

    inputs = _yaml(DEPLOY / "batch-inputs.yml")["inputs"]
    declared = _yaml(COMPONENT)["inputs"]
    assert set(inputs) <= set(declared)
    required = {name for name, entry in declared.items() if "default" not in entry}
    assert required == {"images"} and required <= set(inputs)
    for name, entry in inputs.items():
        assert entry["type"] == declared[name]["type"], name
        Input(**entry)  # what ml_client.batch_endpoints.invoke(inputs=...) takes
        if "default" in entry:
            assert isinstance(entry["default"], type(declared[name]["default"])), name
    assert inputs["images"]["path"]


# ---- the SDK pipeline ----

def _sdk(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FLAG}
    return subprocess.run([sys.executable, str(SDK_SCRIPT), *flags], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)


@pytest.mark.parametrize("evaluate", [False, True], ids=["score", "score+evaluate"])
def test_sdk_batch_pipeline_validates_offline_with_the_flags_scale(tmp_path, evaluate):
    out = tmp_path / "job.yml"
    result = _sdk(tmp_path, "--validate", "--out", str(out), "--nodes", "3", "--processes-per-node", "4",
                  "--mini-batch-size", "512", "--batch-size", "32", *(["--evaluate"] if evaluate else []))
    assert result.returncode == 0, result.stderr[-2000:]
    job = _yaml(out)
    expected = [*_yaml(PIPELINE)["jobs"], *(["evaluate"] if evaluate else [])]
    assert list(job["jobs"]) == expected
    assert f"pipeline valid: {len(expected)} jobs" in result.stdout
    score = job["jobs"]["score"]
    assert score["type"] == "parallel" and score["component"]["name"] == "score_image_model_parallel"
    assert str(score["mini_batch_size"]) == "512"
    assert score["resources"]["instance_count"] == 3 and score["max_concurrency_per_instance"] == 4
    assert score["inputs"]["batch_size"] == 32
    assert score["compute"].removeprefix("azureml:") == "gpu-cluster"
    assert set(job["outputs"]) == {"scored_dataset", *(["evaluation_results"] if evaluate else [])}
    if evaluate:
        assert job["jobs"]["evaluate"]["inputs"]["scored_dataset"]["path"] == \
               "${{parent.jobs.merge.outputs.scored_dataset}}"


def test_sdk_batch_pipeline_refuses_zero_nodes_in_one_line(tmp_path):
    result = _sdk(tmp_path, "--validate", "--nodes", "0")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "--nodes" in errors[0]


# ---- the parallel driver in the parallel flavour's environment ----

def _pip(spec: Path) -> list[str]:
    doc = _yaml(spec)
    environment = (doc.get("task") or doc)["environment"]
    return next(d["pip"] for d in environment["conda_file"]["dependencies"] if isinstance(d, dict))


def test_parallel_environment_is_the_lock_plus_the_azure_parallel_driver(generator):
    lock = [line.strip() for line in (REPO / "environments" / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    pins = _pip(PARALLEL)
    assert any(pin.startswith("azureml-core==") for pin in pins)
    assert pins[len(lock):] == list(generator.PARALLEL_DRIVER)
    overrides = generator.PARALLEL_DRIVER_OVERRIDES
    for locked, pinned in zip(lock, pins):
        name, _, version = locked.partition("==")
        assert pinned == f"{name}=={overrides.get(name, version)}"
    # Every override replaces a pin the lock has, with another version: none is stale or a no-op.
    locked = dict(line.split("==") for line in lock)
    assert all(name in locked and locked[name] != version for name, version in overrides.items())


def test_only_the_parallel_flavour_carries_the_driver():
    for spec in (REPO / "components").glob("*.yaml"):
        assert not any(pin.startswith("azureml-core") for pin in _pip(spec)), spec.name
