"""benchmarks/device_check.sh still matches the package: it runs only on a lent GPU machine, so an API change
would otherwise break it unseen. Its shell is checked with `bash -n`; its embedded Python with `ast`: every
`designer_resnet` name it imports exists, calls to those names bind to their signatures, and the components it
runs take the flags it passes. The script itself is not run here (DRY=1 takes minutes)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "device_check.sh"
COMPONENTS = REPO / "src" / "designer_resnet" / "components"
# Every heredoc in the script is Python (check.py, the install probe, consolidate, the summary table).
HEREDOC = re.compile(r"<<'(\w+)'[^\n]*\n(.*?)\n\1\n", re.S)


def python_blocks(script: str) -> list[ast.Module]:
    return [ast.parse(body) for _, body in HEREDOC.findall(script)]


def _imported(tree: ast.Module) -> tuple[dict[str, object], list[str]]:
    """({local name: the object} for every `from designer_resnet... import`, [what does not exist])."""
    names, missing = {}, []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "designer_resnet"):
            continue
        try:
            module = importlib.import_module(node.module)
        except ImportError as exc:
            missing.append(f"{node.module} ({exc})")
            continue
        for alias in node.names:
            if hasattr(module, alias.name):
                names[alias.asname or alias.name] = getattr(module, alias.name)
            else:
                missing.append(f"{node.module}.{alias.name}")
    return names, missing


def _target(func: ast.expr, names: dict):
    """The object a call's `X(...)` or `X.attr(...)` names, for X imported from designer_resnet; None otherwise."""
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
        return getattr(names[func.value.id], func.attr, None)
    return None


def _bad_calls(tree: ast.Module, names: dict) -> list[str]:
    """Calls of imported names (and their attributes) whose arguments do not bind, plus attributes that are gone."""
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names \
                and not hasattr(names[node.value.id], node.attr):
            problems.append(f"{node.value.id}.{node.attr}")
        if not isinstance(node, ast.Call) or any(isinstance(a, ast.Starred) for a in node.args) \
                or any(k.arg is None for k in node.keywords):
            continue
        target = _target(node.func, names)
        if target is None or not callable(target):
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        try:
            signature.bind(*node.args, **{k.arg: None for k in node.keywords})
        except TypeError as exc:
            problems.append(f"line {node.lineno}: {ast.unparse(node.func)}(...): {exc}")
    return problems


def _bad_component_flags(tree: ast.Module) -> list[str]:
    """`run("component", "--flag", ...)` in e2e: the component exists and its spec has each flag as a port."""
    problems = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run"
                and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        name = node.args[0].value
        spec_file = COMPONENTS / f"{name}.yaml"
        if not spec_file.is_file():
            problems.append(f"component {name}")
            continue
        spec = yaml.safe_load(spec_file.read_text())
        ports = set(spec.get("inputs") or {}) | set(spec.get("outputs") or {})
        flags = [a.value for a in node.args[1:] if isinstance(a, ast.Constant) and isinstance(a.value, str)
                 and a.value.startswith("--")]
        problems += [f"{name} {flag}" for flag in flags if flag[2:] not in ports]
    return problems


def _bad_benchmark_imports(tree: ast.Module) -> list[str]:
    """Names imported from benchmarks/*.py (on the script's PYTHONPATH), read from their source, not imported."""
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (REPO / "benchmarks" / f"{node.module}.py").is_file():
            source = ast.parse((REPO / "benchmarks" / f"{node.module}.py").read_text())
            defined = {n.name for n in source.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            problems += [f"{node.module}.{a.name}" for a in node.names if a.name not in defined]
    return problems


def problems_in(script: str) -> list[str]:
    """What in the script's Python no longer matches the package (empty when it all does)."""
    problems = []
    for tree in python_blocks(script):
        names, missing = _imported(tree)
        problems += missing + _bad_calls(tree, names) + _bad_component_flags(tree) + _bad_benchmark_imports(tree)
    return problems


@pytest.fixture(scope="module")
def script() -> str:
    return SCRIPT.read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_device_check_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_device_check_python_parses_and_uses_only_what_the_package_has(script):
    assert len(python_blocks(script)) == 5  # consolidate, the install and environment probes, check.py, the summary
    assert problems_in(script) == []


@pytest.mark.parametrize("old, new, expected", [
    ("import ImageDataset, decode_plan, transforms_for", "import ImageDataset, decode_planner, transforms_for",
     "designer_resnet.training.dataset.decode_planner"),
    ("from designer_resnet.training.dataset import batches", "from designer_resnet.training.data import batches",
     "designer_resnet.training.data"),
    ("raw, uint8=uint8, decode=decode)", "raw, as_uint8=uint8, decode=decode)", "ImageDataset(...)"),
    ('r["compute"], r["cfg"], e,', 'r["compute"], r["cfg"],', "train_one_epoch(...)"),
    ("Compute.resolve(dev, precision=", "Compute.choose(dev, precision=", "Compute.choose"),
    ('"--sync_batch_norm", "true",', '"--sync_batchnorm", "true",', "train_pytorch_model --sync_batchnorm"),
    ("from train_throughput import plain_loop", "from train_throughput import plain_loops", "plain_loops"),
])
def test_a_name_the_package_lacks_is_caught(script, old, new, expected):
    assert script.count(old) == 1, f"the script changed: {old!r} is not in it once"
    problems = problems_in(script.replace(old, new))
    assert any(expected in p for p in problems), problems
