"""The Azure ML environment: azure-ai-ml loads it, it installs what the tests ran, and its CUDA fits torch's."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import yaml
from azure.ai.ml import load_environment

from conftest import REPO

ENVIRONMENTS = REPO / "environments"
ASSET = ENVIRONMENTS / "designer-resnet.yaml"
CUDA12_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-cuda12.6-ubuntu24.04:latest"


def _load_lock_module():
    spec = importlib.util.spec_from_file_location("environments_lock", ENVIRONMENTS / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _load_lock_module()


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = str(line).split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.lower()] = version
    return out


def _conda() -> dict:
    return yaml.safe_load((ENVIRONMENTS / "conda.yaml").read_text())


def _conda_pins() -> dict[str, str]:
    return _pins(next(d["pip"] for d in _conda()["dependencies"] if isinstance(d, dict)))


def test_azure_ai_ml_loads_the_environment_with_its_image_conda_file_and_driver_note():
    env = load_environment(ASSET)
    assert env.name == "designer-resnet"
    assert env.image.startswith("mcr.microsoft.com/azureml/openmpi")
    assert env.conda_file == _conda()
    # Azure ML studio shows the description: the driver requirement is where a user picks the environment.
    assert re.search(r"NVIDIA driver R\d{3} or newer", env.description)


def test_azure_conda_file_installs_exactly_the_versions_the_tests_ran():
    lock_text = (ENVIRONMENTS / "requirements.txt").read_text()
    locked = _pins(lock_text.splitlines())
    # No CUDA variant differs either: Azure ML installs the same PyPI torch wheels, nvidia-* pins included.
    assert _conda_pins() == locked
    assert {"torch", "torchvision", "nvidia-cuda-runtime"} <= set(locked)
    tested_python = re.search(r"\(Python (\d+\.\d+\.\d+),", lock_text)[1]
    plain = [d for d in _conda()["dependencies"] if isinstance(d, str)]
    assert plain == [f"python={tested_python}", "pip"]


def test_torch_cuda_major_is_the_base_image_cuda_major():
    image = load_environment(ASSET).image
    ours, theirs = lock.torch_cuda(_conda_pins()), lock.image_cuda(image)
    assert ours and theirs, (ours, image)
    assert ours.split(".")[0] == theirs.split(".")[0], f"torch brings CUDA {ours}, {image} has CUDA {theirs}"
    assert lock.cuda_mismatch(_conda_pins(), image) is None


def test_cuda_versions_are_read_from_image_tags_torch_tags_and_runtime_pins():
    assert lock.image_cuda(CUDA12_IMAGE) == "12.6"
    assert lock.image_cuda("mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04:latest") is None
    assert lock.torch_cuda({"torch": "2.14.1+cu126"}) == "12.6"
    assert lock.torch_cuda({"torch": "2.15.0", "nvidia-cuda-runtime": "13.2.86"}) == "13.2"
    assert lock.torch_cuda({"torch": "2.8.0", "nvidia-cuda-runtime-cu12": "12.8.90"}) == "12.8"
    assert lock.torch_cuda({"torch": "2.13.0+cpu"}) is None
    assert "brings no CUDA runtime" in lock.cuda_mismatch({"torch": "2.13.0+cpu"}, CUDA12_IMAGE)
    mismatch = lock.cuda_mismatch({"torch": "2.15.0", "nvidia-cuda-runtime": "13.2.86"}, CUDA12_IMAGE)
    assert "CUDA 13.2" in mismatch and "CUDA 12.6" in mismatch


def test_lock_refuses_a_base_image_of_another_cuda_major_and_writes_nothing(tmp_path):
    folder = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    script = [sys.executable, str(folder / "lock.py")]
    assert subprocess.run([*script, "--check"], capture_output=True, timeout=120).returncode == 0
    asset = folder / "designer-resnet.yaml"
    asset.write_text(asset.read_text().replace(load_environment(ASSET).image, CUDA12_IMAGE))
    before = {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}
    for args in ([], ["--check"]):
        run = subprocess.run([*script, *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 1
        assert re.fullmatch(r"error: torch \S+ brings CUDA 13\.\d+ but the base image in designer-resnet\.yaml has "
                            r"CUDA 12\.6: .*\n", run.stderr), run.stderr
    assert {p.name: p.read_text() for p in folder.iterdir() if p.is_file()} == before
