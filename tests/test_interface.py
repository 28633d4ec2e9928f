"""One definition per interface: each component's source builds its entry module's command line,
the library defaults that mirror it, and the local runner's checks; an installed package carries it."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from designer_resnet import component_source
from designer_resnet.component_source import build_parser, defaults, is_port, load, parameters
from designer_resnet.errors import UserError
from designer_resnet.runner.run import run_pipeline

from conftest import REPO

NAMES = component_source.names()
V2_DIR = REPO / "components"


def _actions(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in build_parser(name)._actions if a.option_strings and a.dest != "help"}


def _outside(entry: dict) -> list[str]:
    """Values just outside the entry's range, as text."""
    low, high = entry.get("min"), entry.get("max")
    integer = str(entry["type"]).lower() == "integer"
    step = 1 if integer else None
    values = []
    if low is not None:
        values.append(str(low - step) if integer else repr(math.nextafter(float(low), -math.inf)))
    if high is not None:
        values.append(str(high + step) if integer else repr(math.nextafter(float(high), math.inf)))
    return values


def _inside(entry: dict) -> list[str]:
    return [str(entry[k]) for k in ("min", "max") if entry.get(k) is not None]


def _v2(name: str) -> dict:
    """The generated v2 spec, loaded by azure-ai-ml itself (what Azure ML enforces)."""
    from azure.ai.ml import load_component

    component = load_component(V2_DIR / f"{name}.yaml")
    return {d: {k: {f: getattr(p, f, None) for f in ("type", "default", "min", "max", "enum", "optional")}
                for k, p in getattr(component, d).items()} for d in ("inputs", "outputs")}


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return str(a).lower() == str(b).lower()
    return float(a) == float(b)


@pytest.mark.parametrize("name", NAMES)
def test_entry_parser_is_the_spec_azure_ml_reads(name):
    """Every port and parameter has its flag; defaults, enum values and ranges are the v2 spec's."""
    spec, actions = _v2(name), _actions(name)
    for direction in ("inputs", "outputs"):
        for key, port in spec[direction].items():
            assert key in actions and actions[key].option_strings == [f"--{key}"], (direction, key)
            action = actions[key]
            if port["type"] in ("uri_folder", "mlflow_model", "uri_file"):
                assert action.default is None
                if direction == "inputs":
                    assert action.required == (not port["optional"]), key
                continue
            assert not action.required and _same(action.default, port["default"]), (key, action.default, port)
            if port["enum"] is not None:
                assert list(action.choices) == [str(v) for v in port["enum"]], key
                continue
            for text in _inside(port):
                action.type(text)
            for text in _outside(port):
                with pytest.raises(argparse.ArgumentTypeError, match="outside the valid range"):
                    action.type(text)
    local = set(load(name).get(component_source.LOCAL_OPTIONS) or {})
    assert set(actions) == set(spec["inputs"]) | set(spec["outputs"]) | local


def _first_refusable(name: str) -> tuple[str, str, str] | None:
    """(parameter, bad value, what the error says) for the component's first ranged or enum parameter."""
    for key, entry in parameters(name).items():
        if _outside(entry):
            return key, _outside(entry)[0], "outside the valid range"
        if entry.get("enum"):
            return key, "not-a-choice", "invalid choice"
    return None


def _required_ports(name: str) -> list[str]:
    source = load(name)
    return [arg for d in ("inputs", "outputs") for k, e in source[d].items()
            if is_port(e) and not e.get("optional") for arg in (f"--{k}", f"/nonexistent/{k}")]


@pytest.mark.parametrize("name", [n for n in NAMES if _first_refusable(n)])
def test_entry_module_refuses_a_value_just_outside_with_one_line(name, capsys):
    key, bad, says = _first_refusable(name)
    module = importlib.import_module(f"designer_resnet.components.{name}")
    with pytest.raises(SystemExit) as stopped:
        module.main([*_required_ports(name), f"--{key}={bad}"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {name}: argument --{key}: ") and says in err[0], err


def _one_job_pipeline(tmp_path: Path, name: str, key: str) -> Path:
    """A pipeline of one job of `name`, its parameter `key` bound to a pipeline input, its folders to local data."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    source = load(name)
    inputs = {key: defaults(name)[key]}
    bindings = {key: f"${{{{parent.inputs.{key}}}}}"}
    for port, entry in source["inputs"].items():
        if is_port(entry) and not entry.get("optional"):
            inputs[port] = {"type": "uri_folder", "path": str(data)}
            bindings[port] = f"${{{{parent.inputs.{port}}}}}"
    doc = {"type": "pipeline", "inputs": inputs,
           "jobs": {"job": {"type": "command", "component": str(V2_DIR / f"{name}.yaml"), "inputs": bindings}}}
    path = tmp_path / "pipeline.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("name", [n for n in NAMES if _first_refusable(n)])
def test_local_runner_refuses_a_value_just_outside_before_any_job(name, tmp_path):
    key, bad, _ = _first_refusable(name)
    path = _one_job_pipeline(tmp_path, name, key)
    with pytest.raises(UserError, match=rf"^pipeline: job 'job' input '{key}' \(from pipeline input {key}\): "):
        run_pipeline(path, {key: bad}, runs_dir=tmp_path / "runs", echo=lambda *_: None)
    assert not (tmp_path / "runs").exists()


def test_designer_resnet_run_with_an_epoch_count_azure_would_refuse_is_one_line_exit_1(tmp_path):
    path = _one_job_pipeline(tmp_path, "train_pytorch_model", "epochs")
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "run", str(path), "--runs-dir",
                             str(tmp_path / "runs"), "--set", "inputs.epochs=10001"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: pipeline: job 'job' input 'epochs' (from pipeline input epochs): 10001 is outside the valid range "
        "[1, 10000]"]
    assert not (tmp_path / "runs").exists()


def test_a_literal_in_the_pipeline_is_checked_too(tmp_path):
    path = _one_job_pipeline(tmp_path, "split_image_directory", "fraction")
    doc = yaml.safe_load(path.read_text())
    doc["jobs"]["job"]["inputs"]["random_seed"] = -1
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"input 'random_seed' \(from jobs\.job\.inputs\.random_seed\): -1 is outside"):
        run_pipeline(path, {}, runs_dir=tmp_path / "runs", echo=lambda *_: None)


# ---- library defaults and tables come from the same source ----

def test_train_config_defaults_are_the_components():
    from dataclasses import fields

    from designer_resnet.training.train import TrainConfig

    from designer_resnet.components.train_pytorch_model import ARCHITECTURE

    local = load("train_pytorch_model")[component_source.LOCAL_OPTIONS]
    expected = {**defaults("train_pytorch_model"), **{k: e.get("default") for k, e in local.items()}}
    del expected[ARCHITECTURE]  # the entry module's own: it re-builds the untrained model, TrainConfig never sees it
    assert {f.name: f.default for f in fields(TrainConfig)} == expected


def test_init_transformation_switches_follow_the_component_in_order():
    from designer_resnet.transforms.ops import DESIGNER_SWITCHES, designer_ops

    params = parameters("init_image_transformation")
    switches = [k for k, e in params.items() if e["type"] == "Boolean"]
    assert list(DESIGNER_SWITCHES) == switches
    for op, argument in DESIGNER_SWITCHES.values():
        assert not isinstance(argument, str) or argument in params, (op, argument)
    everything = designer_ops(**{s: True for s in switches})
    assert [op for op, _ in everything] == [op for op, _ in DESIGNER_SWITCHES.values()]
    with pytest.raises(TypeError, match="unknown parameter"):
        designer_ops(sizee=3)


def test_library_defaults_are_the_components():
    import inspect

    from designer_resnet.data.archives import DEFAULT_MAX_EXTRACTED_GB
    from designer_resnet.data.split import split_image_directory
    from designer_resnet.transforms.apply import MODES, apply_image_transformation

    assert DEFAULT_MAX_EXTRACTED_GB == defaults("convert_to_image_directory")["max_extracted_gb"]
    split = inspect.signature(split_image_directory).parameters
    assert (split["fraction"].default, split["seed"].default) == tuple(
        defaults("split_image_directory")[k] for k in ("fraction", "random_seed"))
    assert inspect.signature(apply_image_transformation).parameters["mode"].default == \
        defaults("apply_image_transformation")["mode"]
    assert list(MODES) == parameters("apply_image_transformation")["mode"]["enum"]
    from designer_resnet.scoring.score import predict, score_image_model

    for function in (predict, score_image_model):
        assert inspect.signature(function).parameters["batch_size"].default == \
            defaults("score_image_model")["batch_size"]


def test_pipeline_values_are_the_component_defaults_they_feed():
    """A pipeline input that only passes a component parameter along carries that parameter's default."""
    doc = yaml.safe_load((REPO / "pipelines" / "image_classification.yml").read_text())
    fed = {}
    for job in doc["jobs"].values():
        name = Path(job["component"]).stem
        for key, value in (job.get("inputs") or {}).items():
            if isinstance(value, str) and value.startswith("${{parent.inputs."):
                fed.setdefault(value[len("${{parent.inputs."):-2], []).append((name, key))
            elif key in parameters(name) and key != "mode":  # mode differs between the two Apply jobs on purpose
                assert value != defaults(name)[key], f"{name}.{key} restates its default {value!r}"
    for pipeline_input, targets in fed.items():
        value = doc["inputs"][pipeline_input]
        for name, key in targets:
            if key in parameters(name):
                assert _same(value, defaults(name)[key]), (pipeline_input, name, key)


# ---- what an installed (non-editable) package can do ----

def test_evaluate_model_imports_no_torch(tmp_path):
    """Evaluate Model reads a Parquet table: its --help and a whole run import neither torch nor torchvision."""
    import pandas as pd

    from designer_resnet.directories.dataframe_directory import write_dataframe_directory

    scored = tmp_path / "scored"
    table = pd.DataFrame({"category": ["a", "b", "a"], "Scored Labels": ["a", "b", "b"],
                          "Scored Probabilities_a": [0.9, 0.2, 0.4], "Scored Probabilities_b": [0.1, 0.8, 0.6]})
    write_dataframe_directory(scored, table, label_column="category",
                              score_columns={"Multi Class Assigned Labels": "Scored Labels",
                                             "Scored Probabilities_a": "Scored Probabilities_a",
                                             "Scored Probabilities_b": "Scored Probabilities_b"})
    probe = ("import runpy, sys\n"
             "sys.argv = ['evaluate_model'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_module('designer_resnet.components.evaluate_model', run_name='not_main')\n"
             "    from designer_resnet.components.evaluate_model import main\n"
             "    main(sys.argv[1:])\n"
             "except SystemExit:\n"
             "    pass\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n")
    for args in (["--help"], ["--scored_dataset", str(scored), "--evaluation_results", str(tmp_path / "out")]):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "MPLBACKEND": "Agg"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-2000:]
    assert (tmp_path / "out" / "metrics.json").is_file()


@pytest.mark.slow
def test_an_installed_package_registers_and_runs_the_demo_with_no_checkout(tmp_path):
    """`pip install .` (not editable) into a new environment; from an empty folder, register --dry-run and demo work."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch, mlflow, azure-ai-ml) come from the test environment; designer_resnet does not.
    ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "test_dependencies.pth").write_text(ours + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              *wheels.glob("*.whl")], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AZURE_ML_INTERNAL_COMPONENTS_ENABLED")}
    where = subprocess.run([str(python), "-c", "import designer_resnet; print(designer_resnet.__file__)"],
                           capture_output=True, text=True, cwd=empty, env=env, timeout=120)
    assert where.stdout.startswith(site), (where.stdout, where.stderr[-2000:])
    command = [str(venv / "bin" / "designer-resnet")]
    register = subprocess.run([*command, "register", "--dry-run"], capture_output=True, text=True, cwd=empty,
                              env=env, timeout=300)
    assert register.returncode == 0, register.stderr[-2000:]
    pipelines = sorted(yaml.safe_load(p.read_text())["name"] for p in (V2_DIR / "pipeline").glob("*.yaml"))
    assert sorted(line.split()[2].split(":")[0] for line in register.stdout.splitlines()
                  if line.startswith("would register")) == sorted(NAMES + pipelines)
    demo = subprocess.run([*command, "demo", "--epochs", "1"], capture_output=True, text=True, cwd=empty, env=env,
                          timeout=600)
    assert demo.returncode == 0, (demo.stdout[-2000:], demo.stderr[-2000:])
    assert "accuracy on the 360 held-out test images:" in demo.stdout
    assert (empty / "runs").is_dir() and not list(empty.glob("designer-resnet-*"))
    logs = "\n".join(p.read_text() for p in (empty / "runs").glob("*/train/log.txt"))
    assert str(REPO / "src") not in logs  # the code that ran is the installed package's own


# ---- values as Azure ML renders and judges them ----

def test_whole_numbers_written_as_floats_are_integers_as_in_azure_ml(tmp_path):
    """azure-ai-ml parses an Integer with int(float(text)); 5.5 is still refused (Azure would cut it to 5)."""
    actions = _actions("split_image_directory")
    assert actions["random_seed"].type("5.0") == 5 and actions["random_seed"].type("1e3") == 1000
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer"):
        actions["random_seed"].type("5.5")
    path = _one_job_pipeline(tmp_path, "train_pytorch_model", "epochs")
    with pytest.raises(UserError, match="got '2.5'"):
        run_pipeline(path, {"epochs": "2.5"}, runs_dir=tmp_path / "runs", echo=lambda *_: None)


@pytest.mark.parametrize("argv, says", [
    (["--frac", "0.5"], "unrecognized arguments: --frac"),          # no abbreviations: a prefix hides a typo
    (["--fraction", "-1e-05"], "-1e-05 is outside the valid range"),  # a negative number is a value, not an option
    (["--fraction", "-inf"], "expected a finite number"),
])
def test_entry_modules_take_only_whole_flags_and_negative_numbers_as_values(argv, says, capsys):
    module = importlib.import_module("designer_resnet.components.split_image_directory")
    with pytest.raises(SystemExit) as stopped:
        module.main(["--input_path", "a", "--output_path1", "b", "--output_path2", "c", *argv])
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert says in line, line


def test_the_runner_takes_only_the_booleans_azure_ml_takes(tmp_path):
    path = _one_job_pipeline(tmp_path, "resnet", "pretrained")
    with pytest.raises(UserError, match=r"input 'pretrained' .*expected true or false \(Azure ML accepts nothing else\)"):
        run_pipeline(path, {"pretrained": "yes"}, runs_dir=tmp_path / "runs", echo=lambda *_: None)
    assert _actions("resnet")["pretrained"].type("yes") is True  # the entry module itself stays lenient


@pytest.mark.parametrize("change, says", [
    ({"enum": 5}, "its enum must be a list of values, got 5"),
    ({"min": "abc"}, "its min 'abc' is not a number"),
    ({"min": 2, "max": 1}, "its min 2 is above its max 1"),
    ({"type": "numbery"}, "is neither a parameter type"),
])
def test_a_broken_parameter_in_a_users_spec_is_one_line_naming_the_spec(tmp_path, change, says):
    spec = yaml.safe_load((V2_DIR / "split_image_directory.yaml").read_text())
    spec["inputs"]["fraction"].update(change)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "data").mkdir()
    doc = {"type": "pipeline", "inputs": {"images": {"type": "uri_folder", "path": str(tmp_path / "data")}},
           "jobs": {"job": {"type": "command", "component": str(tmp_path / "spec.yaml"),
                            "inputs": {"input_path": "${{parent.inputs.images}}"}}}}
    (tmp_path / "pipeline.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError) as refused:
        run_pipeline(tmp_path / "pipeline.yml", {}, runs_dir=tmp_path / "runs", echo=lambda *_: None)
    message = str(refused.value)
    assert "\n" not in message and "input 'fraction'" in message and says in message and "fix the component spec" \
        in message, message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, says", [
    (["--epochs", "0"], "argument --epochs: 0 is outside the valid range [1, 10000]"),
    (["--model-name", "bogus"], "argument --model-name: 'bogus' is not one of"),
    (["--nodes", "0"], "0 is outside the valid range [1, inf]"),
    (["--out", "/nonexistent-folder/job.yml"], "--out: the folder /nonexistent-folder does not exist"),
])
def test_the_sdk_script_refuses_what_the_components_refuse_in_one_line(argv, says):
    """Its flags parse as the component parameters they feed, so a bad value never reaches a workspace."""
    result = subprocess.run([sys.executable, str(REPO / "pipelines" / "image_classification.py"), "--validate", *argv],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: image_classification.py: ") and says in line, line


# ---- what the review of the runner, demo and register found ----

def test_an_empty_data_path_is_refused_not_read_as_the_current_folder(tmp_path):
    path = _one_job_pipeline(tmp_path, "convert_to_image_directory", "max_extracted_gb")
    doc = yaml.safe_load(path.read_text())
    with pytest.raises(UserError, match=r"^--set inputs.input_path: '' is empty; give a local folder or file$"):
        run_pipeline(path, {"input_path": ""}, runs_dir=tmp_path / "runs", echo=lambda *_: None)
    assert "input_path" in doc["inputs"] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("section, key, value, says", [
    ("distribution", "process_count_per_instance", "abc", "expected an integer, got 'abc'"),
    ("distribution", "process_count_per_instance", 0, "0 is outside the valid range [1, inf]"),
    ("resources", "instance_count", "${{parent.inputs.nodes}}", "(from pipeline input nodes): expected an integer"),
])
def test_process_and_node_counts_are_checked_before_any_job(tmp_path, section, key, value, says):
    path = _one_job_pipeline(tmp_path, "train_pytorch_model", "epochs")
    doc = yaml.safe_load(path.read_text())
    doc["inputs"]["nodes"] = "two"
    doc["jobs"]["job"][section] = {key: value, **({"type": "pytorch"} if section == "distribution" else {})}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=rf"^pipeline: job 'job' {section}\.{key} ") as refused:
        run_pipeline(path, {}, runs_dir=tmp_path / "runs", echo=lambda *_: None)
    assert says in str(refused.value)
    assert not (tmp_path / "runs").exists()


def test_demo_refuses_a_pipeline_without_its_inputs_and_jobs_before_running(tmp_path):
    from designer_resnet import demo

    path = _one_job_pipeline(tmp_path, "split_image_directory", "fraction")
    with pytest.raises(UserError, match=r"^--pipeline: .* lacks input train_images, .* job evaluate, which the demo"):
        demo.main(["--pipeline", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_register_names_a_components_dir_that_is_not_a_folder(tmp_path):
    from designer_resnet import register

    with pytest.raises(UserError, match=r"^--components-dir: .*missing is not a folder; give the folder"):
        register.main(["--dry-run", "--components-dir", str(tmp_path / "missing")])
