"""Where a designer user meets Azure ML: the upload bundle, the one-block pipeline components, the trained
model registered by the run, and publishing to a registry.

azure-ai-ml loads everything with AZURE_ML_INTERNAL_COMPONENTS_ENABLED unset, as the studio and `az ml`
would for a user who never set it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from conftest import REPO

FLAG = "AZURE_ML_INTERNAL_COMPONENTS_ENABLED"
PIPELINE = REPO / "pipelines" / "image_classification.yml"
PIPELINE_DIR = REPO / "components" / "pipeline"
SDK_SCRIPT = REPO / "pipelines" / "image_classification.py"
MODEL_ASSET = "designer-resnet-classifier"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in (FLAG, "PYTHONPATH")}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# The keys of a spec whose values are files or folders azure-ai-ml reads.
PATH_KEYS = ("code", "component", "path", "conda_file", "additional_includes", "program_arguments")


def _paths(node) -> list[str]:
    """Every value a spec gives as a file or folder (under PATH_KEYS, at any depth)."""
    if isinstance(node, dict):
        return [s for key, value in node.items()
                for s in (_strings(value) if key in PATH_KEYS else _paths(value))]
    if isinstance(node, list):
        return [s for value in node for s in _paths(value)]
    return []


def _strings(node) -> list[str]:
    """Every string value in a YAML document."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


# ---- the upload bundle ----

@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    result = subprocess.run([sys.executable, str(REPO / "components" / "bundle.py"), "--output", str(out)],
                            capture_output=True, text=True, env=CLEAN_ENV, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_every_component_has_a_folder_the_studio_uploads(bundle):
    from azure.ai.ml import load_component

    assert FLAG not in os.environ
    sources = sorted(p.stem for p in (REPO / "components").glob("*.yaml"))
    parallel = sorted(p.stem for p in (REPO / "components" / "parallel").glob("*.yaml"))
    folders = sorted(p.name for p in bundle.iterdir() if p.is_dir() and p.name != "pipeline")
    assert folders == sorted(sources + parallel)
    for name in folders:
        folder = bundle / name
        assert sorted(p.name for p in folder.glob("*.yaml")) == [f"{name}.yaml"]
        component = load_component(folder / f"{name}.yaml")
        assert component._validate().passed, name
        assert component.code == "." and component.name == name
        assert (folder / "designer_resnet" / "components" / "__init__.py").is_file()


def test_nothing_in_the_bundle_refers_outside_its_folder(bundle):
    assert not [p for p in bundle.rglob("*") if p.is_symlink()]
    for spec in bundle.rglob("*.yaml"):
        if "designer_resnet" in spec.relative_to(bundle).parts:  # the package's own component sources
            continue
        for text in _paths(_yaml(spec)):
            assert ".." not in Path(text).parts and not text.startswith("/"), (spec, text)
        code = _yaml(spec).get("code")
        assert code in (None, "."), (spec, code)


def test_bundled_pipeline_components_name_the_bundled_components_and_validate(bundle):
    from azure.ai.ml import load_component

    versions = {folder.name: _yaml(folder / f"{folder.name}.yaml")["version"]
                for folder in bundle.iterdir() if folder.is_dir() and folder.name != "pipeline"}
    pipelines = sorted((bundle / "pipeline").glob("*.yaml"))
    assert [p.name for p in pipelines] == sorted(p.name for p in PIPELINE_DIR.glob("*.yaml"))
    for spec in pipelines:
        doc = _yaml(spec)
        source = _yaml(PIPELINE_DIR / spec.name)
        assert doc["inputs"] == source["inputs"] and doc["outputs"] == source["outputs"]
        for name, job in doc["jobs"].items():
            prefix, component, version = job["component"].split(":")
            assert prefix == "azureml" and versions[component] == version, (spec.name, name)
        assert load_component(spec)._validate().passed, spec.name


def test_bundle_refuses_to_replace_the_repository():
    result = subprocess.run([sys.executable, str(REPO / "components" / "bundle.py"), "--output", str(REPO)],
                            capture_output=True, text=True, env=CLEAN_ENV, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: --output") and len(result.stderr.strip().splitlines()) == 1
    assert (REPO / "components" / "generate.py").is_file()


# ---- the pipeline components: the whole flow, and train + score, as one designer block ----

def _component(name: str):
    from azure.ai.ml import load_component

    assert FLAG not in os.environ
    component = load_component(PIPELINE_DIR / f"{name}.yaml")
    result = component._validate()
    assert result.passed, result.error_messages
    return component


def test_the_whole_pipeline_is_one_block_with_computes_nodes_and_processes_as_inputs():
    component = _component("image_classification")
    raw = _yaml(PIPELINE_DIR / "image_classification.yaml")
    inputs = raw["inputs"]
    assert inputs["compute"]["default"] == "cpu-cluster" and inputs["train_compute"]["default"] == "gpu-cluster"
    assert inputs["node_count"]["type"] == inputs["processes_per_node"]["type"] == "integer"
    assert all(entry.get("description") for entry in inputs.values()), "the designer shows each input's description"
    assert {n for n, e in inputs.items() if "default" not in e} == {"train_images", "test_images"}
    train = raw["jobs"]["train"]
    assert train["compute"] == "${{parent.inputs.train_compute}}"
    assert train["distribution"]["process_count_per_instance"] == "${{parent.inputs.processes_per_node}}"
    assert train["resources"]["instance_count"] == "${{parent.inputs.node_count}}"
    assert all(job["compute"] == "${{parent.inputs.compute}}" for name, job in raw["jobs"].items() if name != "train")
    assert set(component.jobs) == set(_yaml(PIPELINE)["jobs"])
    assert "name" not in raw["outputs"]["trained_model"]  # registration is the pipeline job's choice


def test_train_and_score_block_takes_prepared_image_directories():
    component = _component("train_and_score")
    raw = _yaml(PIPELINE_DIR / "train_and_score.yaml")
    assert list(raw["jobs"]) == ["resnet", "train", "score", "evaluate"] and set(component.jobs) == set(raw["jobs"])
    data = {n for n, e in raw["inputs"].items() if e["type"] == "uri_folder"}
    assert data == {"training_data", "validation_data", "test_data"}
    assert all("default" not in raw["inputs"][n] for n in data)
    bindings = " ".join(_strings(raw["jobs"]))
    for job in ("convert_train", "split", "transform_test"):
        assert f"parent.jobs.{job}." not in bindings
    assert raw["jobs"]["train"]["inputs"]["training_data"]["path"] == "${{parent.inputs.training_data}}"
    assert raw["jobs"]["score"]["inputs"]["dataset"] == "${{parent.inputs.test_data}}"
    assert set(raw["outputs"]) == {"trained_model", "evaluation_results"}


def test_yaml_pipeline_binds_processes_per_node_registers_the_model_and_downloads_the_training_sets():
    from azure.ai.ml import load_job

    assert FLAG not in os.environ
    job = load_job(PIPELINE)
    assert job._validate().passed
    rest = job._to_rest_object().as_dict()["properties"]
    train = rest["jobs"]["train"]
    assert train["distribution"]["process_count_per_instance"] == "${{parent.inputs.processes_per_node}}"
    assert train["resources"] == {"instance_count": "${{parent.inputs.node_count}}", "shm_size": "16g"}
    assert rest["jobs"]["score"]["resources"]["shm_size"] == "16g"
    assert {train["inputs"][p]["mode"] for p in ("training_data", "validation_data")} == {"Download"}
    assert train["environment_variables"] == {"DATASET_MOUNT_BLOCK_BASED_CACHE_ENABLED": "true"}
    assert rest["outputs"]["trained_model"] == {"assetName": MODEL_ASSET, "jobOutputType": "mlflow_model"}


def _sdk(tmp_path: Path, *flags: str) -> dict:
    """The SDK pipeline as --validate writes it (its jobs are named after the DSL variables: `trained`)."""
    out = tmp_path / "job.yml"
    result = subprocess.run([sys.executable, str(SDK_SCRIPT), "--validate", "--out", str(out), *flags],
                            capture_output=True, text=True, env=CLEAN_ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return _yaml(out)


def test_sdk_pipeline_registers_the_model_unless_told_not_to(tmp_path):
    job = _sdk(tmp_path, "--processes-per-node", "4")
    assert job["outputs"]["trained_model"]["name"] == MODEL_ASSET
    assert job["jobs"]["trained"]["distribution"]["process_count_per_instance"] == 4
    assert job["jobs"]["trained"]["inputs"]["training_data"]["mode"] == "download"
    other = _sdk(tmp_path, "--no-register", "--training-data-mode", "ro_mount")
    assert "name" not in (other["outputs"]["trained_model"] or {})
    assert other["jobs"]["trained"]["inputs"]["validation_data"]["mode"] == "ro_mount"


# ---- registries ----

def test_register_dry_run_for_a_registry_lists_components_then_pipeline_components():
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register", "--dry-run", "--registry",
                             "my-registry"], capture_output=True, text=True, env=CLEAN_ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("would register")]
    assert all(line.endswith(" in registry my-registry") for line in lines)
    kinds = [line.split("(")[1].split(")")[0] for line in lines]
    assert kinds == sorted(kinds, key=lambda kind: kind == "pipeline")  # children before the pipelines using them
    pipelines = {line.split()[2] for line in lines if "(pipeline)" in line}
    assert pipelines == {f"{_yaml(p)['name']}:{_yaml(p)['version']}" for p in PIPELINE_DIR.glob("*.yaml")}


def test_register_takes_a_registry_or_a_workspace_not_both():
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "register", "--registry", "r",
                             "--workspace", "w"], capture_output=True, text=True, env=CLEAN_ENV, timeout=300)
    assert result.returncode == 1 and "not allowed with" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class _Credential:
    """A credential whose token no service checks: the requests below never leave this process."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("token", 2**31)

    def get_token_info(self, *scopes, **kwargs):
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("token", 2**31)


class _Network(requests.Session):
    """The network under azure-core's own RequestsTransport: records each request, answers from here.

    Registry discovery gets the registry's details; anything else a 409, which stops the upload.
    """

    def __init__(self, registry: str):
        super().__init__()
        self.registry = registry
        self.requests: list[tuple[str, str]] = []

    def request(self, method, url, **kwargs):
        from urllib3 import HTTPResponse

        self.requests.append((method, url))
        if url.split("?")[0].endswith(f"/registries/{self.registry}/discovery"):
            status, body = 200, {"registryName": self.registry, "primaryRegion": "westeurope",
                                 "regions": ["westeurope"], "subscriptionId": "00000000-0000-0000-0000-00000000beef",
                                 "resourceGroup": "rg-registry",
                                 "primaryRegionResourceProviderUri": "https://westeurope.api.azureml.ms/"}
        else:
            status, body = 409, {"error": {"code": "Conflict", "message": "stopped by the test"}}
        data = json.dumps(body).encode()
        raw = HTTPResponse(body=io.BytesIO(data), status=status, preload_content=False,
                           headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
        return requests.adapters.HTTPAdapter().build_response(requests.Request(method, url).prepare(), raw)


def test_publishing_to_a_registry_goes_to_the_registry_and_never_to_a_workspace():
    """azure-ai-ml's own MLClient and component operations, over a recorded network: the path a real run takes."""
    from azure.ai.ml import load_component
    from azure.core.pipeline.transport import RequestsTransport

    from designer_resnet.register import register_one
    from designer_resnet.workspace import ml_client

    network = _Network("my-registry")
    client = ml_client(registry="my-registry", credential=_Credential(),
                       transport=RequestsTransport(session=network, session_owner=False))
    assert client._operation_scope.registry_name == "my-registry"
    assert client._operation_scope.subscription_id == "00000000-0000-0000-0000-00000000beef"
    with pytest.raises(Exception):  # the recorded network refuses the upload
        register_one(client, load_component(REPO / "components" / "resnet.yaml"))
    urls = [url for _, url in network.requests]
    assert "/registries/my-registry/discovery" in urls[0]
    assert len(urls) >= 2 and all("/registries/my-registry/" in url for url in urls[1:])
    assert not [url for url in urls if "/workspaces/" in url]


def test_an_unreachable_registry_is_one_line():
    from azure.core.pipeline.transport import RequestsTransport

    from designer_resnet.errors import UserError
    from designer_resnet.workspace import ml_client

    class Unknown(_Network):
        def request(self, method, url, **kwargs):
            self.registry = "someone-else"  # so discovery answers 409 as for any other URL
            return super().request(method, url, **kwargs)

    with pytest.raises(UserError) as refused:
        ml_client(registry="nope", credential=_Credential(),
                  transport=RequestsTransport(session=Unknown("nope"), session_owner=False))
    assert str(refused.value).startswith("--registry nope: not found or not reachable") and "\n" not in str(refused.value)
