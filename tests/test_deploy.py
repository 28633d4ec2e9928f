"""deploy/: the online endpoint and deployment specs load with azure-ai-ml, and the sample request is valid."""

from __future__ import annotations

import base64
import binascii
import io
import json

import pytest
from PIL import Image

from conftest import REPO

DEPLOY = REPO / "deploy"
REQUEST = DEPLOY / "sample-request.json"


@pytest.fixture(scope="module")
def endpoint():
    from azure.ai.ml import load_online_endpoint
    return load_online_endpoint(source=DEPLOY / "endpoint.yml")


@pytest.fixture(scope="module")
def deployment():
    from azure.ai.ml import load_online_deployment
    return load_online_deployment(source=DEPLOY / "deployment.yml")


@pytest.fixture(scope="module")
def request_body() -> dict:
    return json.loads(REQUEST.read_text(encoding="utf-8"))


def test_endpoint_is_managed_with_key_auth(endpoint):
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    assert isinstance(endpoint, ManagedOnlineEndpoint)
    assert endpoint.name == "designer-resnet"
    assert endpoint.auth_mode == "key"


def test_deployment_is_a_no_code_mlflow_deployment(deployment, endpoint):
    from azure.ai.ml.entities import ManagedOnlineDeployment
    assert isinstance(deployment, ManagedOnlineDeployment)
    assert deployment.endpoint_name == endpoint.name
    # A registered model, by name plus version or label; no scoring script and no environment.
    assert isinstance(deployment.model, str)
    assert deployment.model.removeprefix("azureml:").startswith("designer-resnet-classifier")
    assert deployment.code_configuration is None
    assert deployment.environment is None
    assert deployment.instance_type and deployment.instance_count == 1


def test_deployment_request_timeout_is_within_service_limit(deployment):
    timeout = deployment.request_settings.request_timeout_ms
    assert 5000 <= timeout <= 180000


def test_sample_request_is_input_data_split_table(request_body):
    assert list(request_body) == ["input_data"]
    table = request_body["input_data"]
    assert table["columns"] == ["image"]
    assert len(table["data"]) >= 2
    assert table["index"] == list(range(len(table["data"])))
    assert all(isinstance(row, list) and len(row) == 1 for row in table["data"])


def test_sample_request_cells_are_images(request_body):
    formats = set()
    for (cell,) in request_body["input_data"]["data"]:
        assert isinstance(cell, str)
        try:
            raw = base64.b64decode(cell, validate=True)
        except binascii.Error as e:
            pytest.fail(f"cell is not strict base64: {e}")
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            formats.add(img.format)
            assert img.width > 0 and img.height > 0
    assert {"PNG", "JPEG"} <= formats


def test_sample_request_is_small():
    assert REQUEST.stat().st_size < 8 * 1024
