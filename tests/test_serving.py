"""The trained model folder served as an MLflow model: raw image bytes in, probabilities and labels out."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.scoring.score import score_image_model

from conftest import free_port, user_environment

CLASSES = ["a", "b", "c"]
SERVER_START_S = 180


@pytest.fixture(scope="module")
def expected(transformed_model, tmp_path_factory):
    """Score Image Model's answers for the raw test photos: {file bytes (base64): probabilities}."""
    root = transformed_model
    out = tmp_path_factory.mktemp("score") / "scored"
    score_image_model(root / "model", root / "test", out, workers=0)
    table = read_dataframe_directory(out)
    test = ImageDirectory.load(root / "test")
    answers = {}
    for row, (_, scored) in zip(test.rows, table.iterrows()):
        payload = base64.b64encode(test.image_path(row).read_bytes()).decode("ascii")
        answers[payload] = scored[[f"Scored Probabilities_{c}" for c in CLASSES]].to_numpy(dtype=float)
    return answers


def _isolated_env(tmp_path: Path) -> dict:
    """No MLflow tracking or telemetry, and a HOME of its own: the server writes nothing of ours elsewhere."""
    env = user_environment(tmp_path / "home")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               # `mlflow models serve` starts `uvicorn` by name: the environment's own bin comes first.
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_mlmodel_describes_the_request_and_answer(transformed_model):
    model = transformed_model / "model"
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    assert json.loads(mlmodel["signature"]["inputs"]) == [{"type": "string", "name": "image", "required": True}]
    outputs = {c["name"]: c["type"] for c in json.loads(mlmodel["signature"]["outputs"])}
    assert outputs == {"probs": "array", "labels": "array"}
    assert "loader_module" in mlmodel["flavors"]["python_function"] and "pytorch" not in mlmodel["flavors"]
    assert (model / "input_example.json").stat().st_size < 4096
    pins = (model / "requirements.txt").read_text().split()
    assert any(p.startswith("torch==") for p in pins) and all("==" in p for p in pins)


def test_pyfunc_loads_with_its_own_code_and_answers_as_score_does(transformed_model, expected, tmp_path):
    """A fresh process: mlflow.pyfunc.load_model runs the package copy inside the model folder."""
    script = tmp_path / "load.py"
    script.write_text(
        "import json, sys\nimport pandas as pd\nimport mlflow.pyfunc\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\nimport designer_resnet\n"
        "rows = json.load(open(sys.argv[2]))\nout = model.predict(pd.DataFrame({'image': rows}))\n"
        "print(json.dumps({'package': designer_resnet.__file__, 'probs': out['probs'].tolist(),"
        " 'labels': out['labels'].tolist()}))\n")
    (tmp_path / "rows.json").write_text(json.dumps(list(expected)))
    result = subprocess.run([sys.executable, str(script), str(transformed_model / "model"), str(tmp_path / "rows.json")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(answer["package"]).is_relative_to(transformed_model / "model" / "code")
    np.testing.assert_allclose(np.array(answer["probs"]), np.stack(list(expected.values())), atol=1e-5)
    assert answer["labels"] == [CLASSES] * len(expected)


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer /ping within {SERVER_START_S} s: {log.read_text()[-3000:]}")


def test_mlflow_models_serve_answers_raw_images_as_score_image_model_does(transformed_model, expected, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", str(transformed_model / "model"),
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=_isolated_env(tmp_path),
                                  start_new_session=True)
    try:
        _wait_until_up(url, server, log)
        rows = list(expected)  # PNG and JPEG files of 45x38 and 64x48
        status, body = _post(url + "/invocations", {"dataframe_split": {"columns": ["image"], "data": [[r] for r in rows]}})
        assert status == 200, body
        answers = pd.DataFrame(body["predictions"])
        np.testing.assert_allclose(np.stack(answers["probs"].to_numpy()), np.stack(list(expected.values())), atol=1e-5)
        assert answers["labels"].tolist() == [CLASSES] * len(rows)

        status, body = _post(url + "/invocations", {"dataframe_split": {"columns": ["image"],
                                                                       "data": [[rows[0]], [base64.b64encode(b"not an image").decode()]]}})
        assert status == 400 and "row 1" in body.get("message", "") and "not an image" in body["message"]
        status, body = _post(url + "/invocations", {"dataframe_split": {"columns": ["image"], "data": [[rows[1]]]}})
        assert status == 200 and len(body["predictions"]) == 1  # still serving after a bad request
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=10)
