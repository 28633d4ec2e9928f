"""The local runner refuses a pipeline it cannot run in full before any job starts, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from designer_resnet.errors import UserError
from designer_resnet.runner import run as run_module
from designer_resnet.runner.graph import Node, Pipeline, load_pipeline, topological_order
from designer_resnet.runner import graph as graph_module
from designer_resnet.runner.run import run_pipeline

from conftest import REPO

# Writes sys.argv[2] into <out>/v.txt; extra arguments are ignored.
_WRITE = ("python -c \"import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); "
          "(p / 'v.txt').write_text(sys.argv[2])\"")
STEP = {
    "type": "command",
    "inputs": {
        "source": {"type": "uri_folder", "optional": True},
        "greeting": {"type": "string", "default": "hello"},
        "count": {"type": "integer", "default": 1},
    },
    "outputs": {"out": {"type": "uri_folder"}},
    "code": ".",
    "command": _WRITE + " ${{outputs.out}} ${{inputs.greeting}} ${{inputs.count}} $[[--source ${{inputs.source}}]]",
}
NEEDS = {
    "type": "command",
    "inputs": {"source": {"type": "uri_folder", "optional": True}, "name": {"type": "string"}},
    "outputs": {"out": {"type": "uri_folder"}},
    "code": ".",
    "command": _WRITE + " ${{outputs.out}} ${{inputs.name}} $[[--source ${{inputs.source}}]]",
}
TRAIN = {**STEP, "distribution": {"type": "pytorch", "process_count_per_instance": 1}}


def _pipeline(tmp_path: Path, jobs: dict, inputs: dict | None = None) -> Path:
    """A pipeline YAML over the toy components; a job given as a dict without `component` uses step.yaml."""
    comps = tmp_path / "comps"
    comps.mkdir(exist_ok=True)
    for name, spec in (("step", STEP), ("needs", NEEDS), ("train", TRAIN)):
        (comps / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    doc = {"type": "pipeline", "inputs": inputs or {"greeting": "hi", "count": 2}, "jobs": {}}
    for name, job in jobs.items():
        if isinstance(job, dict):
            job = {"type": "command", "component": "comps/step.yaml", **job}
        doc["jobs"][name] = job
    path = tmp_path / "p.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _refused(path, tmp_path, match: str, **kwargs) -> str:
    """run_pipeline fails with one line matching `match`, and nothing ran."""
    with pytest.raises(UserError, match=match) as info:
        run_pipeline(path, {}, runs_dir=tmp_path / "runs", echo=lambda *_: None, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / "runs").exists()
    return message


def _link(job: str, out: str = "out") -> str:
    return "${{parent.jobs.%s.outputs.%s}}" % (job, out)


def test_toy_pipeline_runs(tmp_path):
    path = _pipeline(tmp_path, {"a": {"inputs": {"greeting": "${{parent.inputs.greeting}}"}},
                                "b": {"inputs": {"source": _link("a"), "count": 3}}})
    result = run_pipeline(path, {}, runs_dir=tmp_path / "runs", echo=lambda *_: None)
    assert (result.nodes["a"].folder / "out" / "v.txt").read_text() == "hi"
    assert (result.nodes["b"].folder / "out" / "v.txt").read_text() == "hello"


# ---- 1: a job input the component does not declare ----

def test_unknown_job_input_is_refused_with_the_closest_name(tmp_path):
    path = _pipeline(tmp_path, {"a": {"inputs": {"greeting": "hi"}},
                                "b": {"inputs": {"source": _link("a"), "greting": "typo"}}})
    message = _refused(path, tmp_path, r"job 'b' has no input 'greting'")
    assert "did you mean 'greeting'?" in message
    assert "source, greeting, count" in message


def test_unknown_connected_input_is_refused_as_unknown_input(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"sourse": _link("a")}}})
    message = _refused(path, tmp_path, r"job 'b' has no input 'sourse'")
    assert "did you mean 'source'?" in message


# ---- 2: bindings to things that do not exist ----

def test_binding_to_an_undeclared_pipeline_input_is_refused_up_front(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"source": _link("a"), "count": "${{parent.inputs.nope}}"}}})
    message = _refused(path, tmp_path, r"job 'b': input 'count' is bound to pipeline input 'nope', which the pipeline "
                                       r"does not declare")
    assert "greeting, count" in message


def test_binding_to_an_unknown_job_or_output_is_refused(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"source": _link("zzz")}}})
    _refused(path, tmp_path, r"b\.source is connected to unknown job 'zzz'")
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"source": _link("a", "outt")}}})
    _refused(path, tmp_path, r"b\.source is connected to a\.outt, which is not an output of a")


def test_malformed_binding_is_refused_not_passed_as_text(tmp_path):
    path = _pipeline(tmp_path, {"a": {"inputs": {"greeting": "${{parent.input.greeting}}"}}})
    _refused(path, tmp_path, r"job 'a': input 'greeting' has .*\$\{\{parent\.input\.greeting\}\}.*")


# ---- 3: a pipeline file that is not a pipeline ----

CASES = {
    "bad_yaml": r"is not valid YAML \(",
    "folder": r"is a folder; give the pipeline's YAML file$",
    "jobs_list": r"`jobs` must be a mapping of job names to jobs, got a list$",
    "jobs_string": r"`jobs` must be a mapping of job names to jobs, got a str$",
    "job_string": r"job 'a' must be a mapping with a `component`, got 'comps/step.yaml'$",
    "top_list": r"must be a mapping with `jobs`, got a list$",
    "empty": r"is empty$",
    "no_jobs": r"has no jobs$",
    "inputs_list": r"`inputs` must be a mapping of input names to values, got a list$",
    "job_inputs_list": r"job 'a': `inputs` must be a mapping of input names to values, got a list$",
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_pipeline_file_is_one_line(tmp_path, case):
    path = _pipeline(tmp_path, {"a": {}})
    doc = yaml.safe_load(path.read_text())
    text = None
    if case == "bad_yaml":
        text = "jobs:\n  a: {component: [\n"
    elif case == "folder":
        path = tmp_path / "folder.yml"
        path.mkdir()
    elif case == "jobs_list":
        doc["jobs"] = [doc["jobs"]["a"]]
    elif case == "jobs_string":
        doc["jobs"] = "a"
    elif case == "job_string":
        doc["jobs"]["a"] = "comps/step.yaml"
    elif case == "top_list":
        doc = [doc]
    elif case == "empty":
        text = ""
    elif case == "no_jobs":
        doc["jobs"] = {}
    elif case == "inputs_list":
        doc["inputs"] = ["greeting"]
    elif case == "job_inputs_list":
        doc["jobs"]["a"]["inputs"] = ["greeting"]
    if case != "folder":
        path.write_text(text if text is not None else yaml.safe_dump(doc))
    _refused(path, tmp_path, r"^pipeline: .*" + CASES[case])


def test_folder_as_pipeline_is_one_line_from_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "designer_resnet.cli", "run", str(tmp_path), "--runs-dir",
                             str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: pipeline: {tmp_path} is a folder; give the pipeline's YAML file"


def test_component_spec_that_is_a_folder_is_one_line(tmp_path):
    path = _pipeline(tmp_path, {"a": {"component": "comps/dir.yaml"}})
    (tmp_path / "comps" / "dir.yaml").mkdir()
    _refused(path, tmp_path, r"^pipeline: job 'a': component spec .*dir\.yaml is a folder")


# ---- 4: long chains and cycles ----

def _chain(n: int, spec_path: Path) -> Pipeline:
    nodes = {}
    for i in range(n):
        inputs = {"source": _link(f"j{i - 1}")} if i else {}
        nodes[f"j{i}"] = Node(f"j{i}", spec_path, STEP, inputs)
    # declared last-first, so the order has to follow the links
    return Pipeline(spec_path, {"jobs": {}}, dict(reversed(list(nodes.items()))))


def test_a_1200_job_chain_is_ordered_without_recursion(tmp_path):
    pipeline = _chain(1200, tmp_path / "step.yaml")
    assert topological_order(pipeline) == [f"j{i}" for i in range(1200)]
    graph_module.check_pipeline(pipeline)


def test_a_1200_job_chain_loads_and_is_checked(tmp_path):
    path = _pipeline(tmp_path, {f"j{i}": {"inputs": {"source": _link(f"j{i - 1}")} if i else {}}
                                for i in range(1200)})
    pipeline = load_pipeline(path)
    graph_module.check_pipeline(pipeline)
    assert topological_order(pipeline)[:3] == ["j0", "j1", "j2"]


def test_a_cycle_is_named(tmp_path):
    pipeline = _chain(1200, tmp_path / "step.yaml")
    pipeline.nodes["j0"].inputs["source"] = _link("j1199")  # closes the whole chain into a ring
    with pytest.raises(UserError, match=r"jobs form a cycle: (j\d+) -> .* -> \1$") as info:
        topological_order(pipeline)
    assert str(info.value).count(" -> ") == 1200
    small = _chain(3, tmp_path / "step.yaml")
    small.nodes["j0"].inputs["source"] = _link("j2")
    small.nodes["extra"] = Node("extra", tmp_path / "step.yaml", STEP, {"source": _link("j1")})
    with pytest.raises(UserError) as info:
        topological_order(small)
    assert str(info.value) in {f"pipeline: jobs form a cycle: {c}" for c in
                               ("j0 -> j1 -> j2 -> j0", "j1 -> j2 -> j0 -> j1", "j2 -> j0 -> j1 -> j2",
                                "j0 -> j2 -> j1 -> j0", "j1 -> j0 -> j2 -> j1", "j2 -> j1 -> j0 -> j2")}


def test_self_loop_is_a_cycle(tmp_path):
    pipeline = _chain(2, tmp_path / "step.yaml")
    pipeline.nodes["j1"].inputs["source"] = _link("j1")
    with pytest.raises(UserError, match=r"jobs form a cycle: j1 -> j1$"):
        topological_order(pipeline)


# ---- 5: the reuse key of a distributed job records its process count ----

def _fake_call(calls):
    def call(argv, **kwargs):
        calls.append(argv)
        Path(kwargs["cwd"], "out").mkdir(parents=True, exist_ok=True)
        return 0
    return call


def test_rerun_with_another_process_count_does_not_reuse_the_distributed_job(tmp_path, monkeypatch):
    path = _pipeline(tmp_path, {"prep": {}, "train": {"component": "comps/train.yaml",
                                                      "distribution": {"type": "pytorch", "process_count_per_instance": 4},
                                                      "inputs": {"source": _link("prep")}}})
    calls: list = []
    monkeypatch.setattr(run_module.subprocess, "call", _fake_call(calls))
    monkeypatch.setattr(run_module, "local_processes", lambda node, requested: requested or 1)
    runs = tmp_path / "runs"
    first = run_pipeline(path, {}, runs_dir=runs, nproc=1, echo=lambda *_: None)
    assert not first.nodes["train"].reused
    same = run_pipeline(path, {}, runs_dir=runs, nproc=1, echo=lambda *_: None)
    assert same.nodes["train"].reused and same.nodes["prep"].reused
    two = run_pipeline(path, {}, runs_dir=runs, nproc=2, echo=lambda *_: None)
    assert two.nodes["prep"].reused  # not distributed: the process count is no part of its key
    assert not two.nodes["train"].reused
    assert "--nproc_per_node=2" in calls[-1]
    # no --nproc: the local GPU count decides, and a machine with another count reruns it too
    monkeypatch.setattr(run_module, "local_processes", lambda node, requested: requested or 2)
    auto2 = run_pipeline(path, {}, runs_dir=runs, echo=lambda *_: None)
    assert auto2.nodes["train"].reused  # 2 processes, as with --nproc 2
    monkeypatch.setattr(run_module, "local_processes", lambda node, requested: requested or 3)
    auto3 = run_pipeline(path, {}, runs_dir=runs, echo=lambda *_: None)
    assert not auto3.nodes["train"].reused


def test_reuse_key_changes_with_the_process_count(tmp_path):
    node = Node("train", tmp_path / "train.yaml", TRAIN, {})
    parts = dict(spec="s", code="c", identity={"inputs.count": "1"})
    one = run_module.reuse_key(node, processes=1, **parts)
    assert one == run_module.reuse_key(node, processes=1, **parts)
    assert one != run_module.reuse_key(node, processes=2, **parts)
    plain = Node("prep", tmp_path / "step.yaml", STEP, {})
    assert run_module.reuse_key(plain, processes=1, **parts) == run_module.reuse_key(plain, processes=2, **parts)


# ---- 6: a required input neither bound nor defaulted ----

def test_unbound_required_input_is_refused_before_any_job(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"component": "comps/needs.yaml", "inputs": {"source": _link("a")}}})
    _refused(path, tmp_path, r"^pipeline: job 'b': input 'name' is required; bind it or give it a value "
                             r"\(the component has no default\)$")


def test_placeholder_of_an_undeclared_input_is_refused(tmp_path):
    path = _pipeline(tmp_path, {"a": {}})
    spec = dict(STEP, command=STEP["command"] + " ${{inputs.ghost}}")
    (tmp_path / "comps" / "step.yaml").write_text(yaml.safe_dump(spec))
    _refused(path, tmp_path, r"job 'a': the command needs inputs\.ghost, which the component does not declare")


@pytest.mark.parametrize("name", ["image_classification.yml", "image_classification_typed.yml"])
def test_the_shipped_pipelines_pass_the_checks(name):
    pipeline = load_pipeline(REPO / "pipelines" / name)
    graph_module.check_pipeline(pipeline)
    assert len(topological_order(pipeline)) == 10


def test_optional_input_used_outside_an_optional_block_must_be_bound(tmp_path):
    path = _pipeline(tmp_path, {"a": {}})
    spec = dict(STEP, command=STEP["command"] + " --also ${{inputs.source}}")
    (tmp_path / "comps" / "step.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    _refused(path, tmp_path, r"job 'a': the command needs inputs\.source, which is optional but neither bound nor "
                             r"defaulted; bind it$")


def test_job_binding_without_an_output_is_refused(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"source": "${{parent.jobs.a}}"}}})
    _refused(path, tmp_path, r"job 'b': input 'source' has .*which is not a binding this runner knows")


def test_command_that_cannot_run_locally_is_refused_before_any_job(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"component": "comps/shell.yaml", "inputs": {"source": _link("a")}}})
    (tmp_path / "comps" / "shell.yaml").write_text(yaml.safe_dump(dict(STEP, command="bash -c 'echo ${{inputs.count}}'")))
    _refused(path, tmp_path, r"^pipeline: job 'b': only `python \.\.\.` commands run locally$")


@pytest.mark.parametrize("name", ["image_classification.yml", "image_classification_typed.yml"])
def test_typo_in_a_shipped_pipeline_is_refused_before_its_data_is_asked_for(tmp_path, name):
    doc = yaml.safe_load((REPO / "pipelines" / name).read_text())
    doc["jobs"]["train"]["inputs"]["learning_rat"] = doc["jobs"]["train"]["inputs"].pop("learning_rate")
    for job in doc["jobs"].values():
        job["component"] = job["component"].replace("../", f"{REPO}/")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    message = _refused(path, tmp_path, r"^pipeline: job 'train' has no input 'learning_rat' "
                                       r"\(did you mean 'learning_rate'\?\); the inputs of train_pytorch_model\.yaml are: "
                                       r"untrained_model, training_data, ")
    from designer_resnet.component_source import load

    assert message.endswith(", ".join(load("train_pytorch_model")["inputs"]))  # every input, in the source's order


def test_command_with_an_unclosed_quote_is_one_line_before_any_job(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"component": "comps/quote.yaml", "inputs": {"source": _link("a")}}})
    (tmp_path / "comps" / "quote.yaml").write_text(yaml.safe_dump(dict(STEP, command="python -c 'print(1)")))
    _refused(path, tmp_path, r"^pipeline: job 'b': its command cannot be split into arguments \(No closing quotation\)$")
