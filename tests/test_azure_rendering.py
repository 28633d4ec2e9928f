"""The v2 specs' own commands, rendered as Azure ML renders them, run end to end.

No runner here: each command comes from azure-ai-ml's reading of the spec, its
values are rendered as Azure renders them (defaults filled, Booleans True/False,
optional parts dropped when unset), and it runs in the code snapshot folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_component

from designer_resnet.directories.dataframe_directory import read_dataframe_directory
from designer_resnet.specs import render
from designer_resnet.training.distributed import local_world_size

from conftest import REPO, free_port, write_labelled_set

CODE = REPO / "src"  # the specs' code snapshot: Azure runs each command from it


def _azure_text(value) -> str:
    return ("True" if value else "False") if isinstance(value, bool) else str(value)


def azure_command(name: str, given: dict[str, str], outputs: dict[str, Path]) -> list[str]:
    """argv of a v2 component as Azure ML would run it: defaults for unbound inputs, unset optionals dropped."""
    component = load_component(REPO / "components" / f"{name}.yaml")
    values = {f"inputs.{k}": _azure_text(port.default) for k, port in component.inputs.items()
              if port.default is not None}
    values.update({f"inputs.{k}": str(v) for k, v in given.items()})
    values.update({f"outputs.{k}": str(v) for k, v in outputs.items()})
    argv = render(component.command, "v2", values)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def _run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=CODE, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, (argv, result.stderr[-3000:])
    return result


def test_v2_chain_runs_from_the_specs_own_commands(tmp_path):
    """Convert -> ResNet -> Train (1 epoch) -> Score -> Evaluate, every command from its v2 spec."""
    write_labelled_set(tmp_path / "photos_train", 8, seed=0)
    write_labelled_set(tmp_path / "photos_valid", 3, seed=1)
    out = tmp_path / "azure"
    for part in ("train", "valid"):
        _run(azure_command("convert_to_image_directory", {"input_path": tmp_path / f"photos_{part}"},
                           {"output_path": out / f"images_{part}"}))
    resnet = azure_command("resnet", {"model_name": "resnet18", "pretrained": "False"},
                           {"output_path": out / "untrained"})
    assert "--weights_file" not in resnet and "--zero_init_residual" in resnet  # optional dropped, default rendered
    assert resnet[resnet.index("--zero_init_residual") + 1] == "False"
    _run(resnet)
    _run(azure_command("train_pytorch_model", {
        "untrained_model": out / "untrained", "training_data": out / "images_train",
        "validation_data": out / "images_valid", "epochs": "1", "batch_size": "8", "learning_rate": "0.01"},
        {"trained_model": out / "model", "checkpoint_path": out / "checkpoint"}))
    assert (out / "model" / "MLmodel").exists()  # what makes the mlflow_model output register as one
    _run(azure_command("score_image_model", {"trained_model": out / "model", "dataset": out / "images_valid"},
                       {"scored_dataset": out / "scored"}))
    evaluate = azure_command("evaluate_model", {"scored_dataset": out / "scored"},
                             {"evaluation_results": out / "evaluation"})
    assert "--scored_dataset_to_compare" not in evaluate
    _run(evaluate)
    scored = read_dataframe_directory(out / "scored")
    assert len(scored) == 9 and set(scored["Scored Labels"]) <= {"a", "b", "c"}
    overall = json.loads((out / "evaluation" / "metrics.json").read_text())["Scored dataset"]["overall"]
    assert overall["Rows"] == 9
    agreed = (scored["Scored Labels"] == scored["category"]).mean()
    assert overall["Overall Accuracy"] == pytest.approx(agreed)


def test_train_runs_under_azure_pytorch_distribution_variables(tmp_path):
    """Two processes started directly, as Azure ML's PyTorch distribution starts them: no launcher,
    MASTER_ADDR/MASTER_PORT/WORLD_SIZE/NODE_RANK per node, RANK/LOCAL_RANK per process, no LOCAL_WORLD_SIZE."""
    write_labelled_set(tmp_path / "photos_train", 8, seed=0)
    write_labelled_set(tmp_path / "photos_valid", 3, seed=1)
    for part in ("train", "valid"):
        _run(azure_command("convert_to_image_directory", {"input_path": tmp_path / f"photos_{part}"},
                           {"output_path": tmp_path / part}))
    _run(azure_command("resnet", {"model_name": "resnet18", "pretrained": "False"}, {"output_path": tmp_path / "untrained"}))
    argv = azure_command("train_pytorch_model", {
        "untrained_model": tmp_path / "untrained", "training_data": tmp_path / "train",
        "validation_data": tmp_path / "valid", "epochs": "1", "batch_size": "4", "learning_rate": "0.01"},
        {"trained_model": tmp_path / "model", "checkpoint_path": tmp_path / "checkpoint"})
    launcher_vars = ("LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_RANK")
    base = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", NODE_RANK="0")
    procs = [subprocess.Popen(argv, cwd=CODE, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    spec = yaml.safe_load((tmp_path / "model" / "model_spec.yaml").read_text())
    assert spec["designer_resnet"]["training"]["world_size"] == 2
    assert sum("trained 1 epoch(s)" in out for out, _ in outputs) == 1  # only rank 0 writes and reports


@pytest.mark.parametrize("env, gpus, world, expected", [
    ({"LOCAL_WORLD_SIZE": "2"}, 8, 16, 2),  # torchrun and MPI say it
    ({}, 4, 8, 4),                          # Azure ML says nothing: one process per local GPU
    ({}, 8, 2, 2),                          # never more than the whole world
    ({}, 0, 2, 1),                          # CPU
])
def test_processes_per_node_without_local_world_size(monkeypatch, env, gpus, world, expected):
    """Loader workers are sized per process from this; Azure ML's PyTorch distribution leaves LOCAL_WORLD_SIZE unset."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert local_world_size(env, world) == expected
