"""Run a pipeline YAML locally: each node a subprocess, in dependency order.

Each node's outputs and log live under `<runs>/<run id>/<node>/`. A node whose
spec, inputs, parameters and code are unchanged since a finished run is reused
from that run, as the designer does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..component_source import is_port, value_parser
from ..errors import UserError
from ..parallel import processes_per_node
from ..specs import command_template, flavour, is_distributed, render
from .graph import Node, Pipeline, check_pipeline, load_pipeline, topological_order

_PARENT_INPUT = re.compile(r"^\$\{\{\s*parent\.inputs\.([\w-]+)\s*\}\}$")
CACHE_INDEX = ".cache.json"
LOG = "log.txt"
DONE = ".done"
TAIL_LINES = 20
DATA_TYPES = ("uri_folder", "uri_file")


@dataclass
class NodeResult:
    name: str
    folder: Path
    reused: bool
    seconds: float


@dataclass
class RunResult:
    run_dir: Path
    nodes: dict[str, NodeResult] = field(default_factory=dict)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`inputs.NAME=VALUE` strings -> {NAME: VALUE}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("inputs.") or len(key) <= len("inputs."):
            raise UserError(f"--set: {item!r} must look like inputs.NAME=VALUE")
        out[key[len("inputs."):]] = value
    return out


def _render_value(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # how Azure renders a Boolean
    return str(value)


def pipeline_inputs(pipeline: Pipeline, overrides: dict[str, str]) -> dict[str, str]:
    """Pipeline-level input values, local paths resolved; remote data needs an override."""
    declared = pipeline.doc.get("inputs") or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise UserError(f"--set: the pipeline has no input {unknown[0]!r}; it has {', '.join(declared)}")
    values = {}
    for name, spec in declared.items():
        if name in overrides:
            value = overrides[name]
            if isinstance(spec, dict) and spec.get("type") in DATA_TYPES:
                path = Path(value).expanduser()
                if not path.exists():
                    raise UserError(f"--set inputs.{name}: {path} does not exist; give a local folder or file")
                value = str(path.resolve())
            values[name] = value
        elif isinstance(spec, dict) and "path" in spec:
            path = str(spec["path"])
            if "://" in path or path.startswith("azureml:"):
                raise UserError(f"inputs.{name}: {path} is Azure data; run locally with --set inputs.{name}=<local folder>")
            values[name] = str((pipeline.path.parent / path).resolve())
        elif isinstance(spec, dict):
            values[name] = _render_value(spec.get("default", ""))
        else:
            values[name] = _render_value(spec)
    return values


def _parameter_value(node: Node, key: str, values_in: dict[str, str]) -> tuple[str, str] | None:
    """(text, where it came from) of one parameter of a job: bound, literal, or the component's default."""
    if key in node.inputs:
        value = node.inputs[key]
        match = _PARENT_INPUT.match(value) if isinstance(value, str) else None
        if match:
            return values_in[match.group(1)], f"pipeline input {match.group(1)}"
        return _render_value(value), f"jobs.{node.name}.inputs.{key}"
    entry = node.spec["inputs"][key]
    return (_render_value(entry["default"]), "the component's default") if "default" in entry else None


def check_parameter_values(pipeline: Pipeline, values_in: dict[str, str]) -> None:
    """Every parameter value a job would get is one its component accepts (type, range, enum), as on Azure ML."""
    for node in pipeline.nodes.values():
        for key, entry in (node.spec.get("inputs") or {}).items():
            if not isinstance(entry, dict) or is_port(entry):
                continue
            found = _parameter_value(node, key, values_in)
            if found is None:
                continue
            text, origin = found
            try:
                value_parser(entry)(text)
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"pipeline: job {node.name!r} input {key!r} (from {origin}): {exc}") from None


def render_command(node: Node, values: dict[str, str], python: list[str]) -> list[str]:
    """The node's command as argv, rendered as Azure ML renders its flavour; `python` replaces the leading python."""
    template = command_template(node.spec)
    if not template:
        raise UserError(f"pipeline: component of job {node.name!r} has no command")
    try:
        rendered = render(template, flavour(node.spec), values)
    except UserError as exc:
        raise UserError(f"pipeline: job {node.name!r}: {exc}") from None
    if rendered[:1] != ["python"]:
        raise UserError(f"pipeline: job {node.name!r}: only `python ...` commands run locally")
    return python + rendered[1:]


def _code_digest(code_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(code_dir.rglob("*.py")):
        digest.update(str(path.relative_to(code_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def data_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of every file under a data input.

    The path alone would let a rerun reuse jobs after the images in the same
    folder changed; the designer reuses only on unchanged data.
    """
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def local_processes(node: Node, requested: int | None) -> int:
    """The node's processes per node, as many as local GPUs allow (1 on CPU), unless --nproc says otherwise."""
    if requested:
        return requested
    wanted = int(((node.raw.get("distribution") or {}).get("process_count_per_instance") or 1))
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # torch missing or broken: the node itself will say so
        gpus = 0
    return processes_per_node(wanted, gpus)


def reuse_key(node: Node, *, spec: str, code: str, identity: dict[str, str], processes: int) -> str:
    """The key a finished job is reused under: its spec, code, input values and, for a distributed job, how it ran.

    The process count is part of a distributed job's key: the learning rate (and the
    batches each process sees) scale with it, so a run with another count is another job.
    """
    parts = {"spec": spec, "code": code, "inputs": identity, "distribution": node.raw.get("distribution")}
    if is_distributed(node.spec, node.raw):
        parts["processes"] = processes
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _check_commands(pipeline: Pipeline) -> None:
    """Render every job's command with stand-in values, so a command that cannot run locally fails before any job."""
    for node in pipeline.nodes.values():
        values = {f"inputs.{key}": "x" for key, spec in (node.spec.get("inputs") or {}).items()
                  if key in node.inputs or (isinstance(spec, dict) and "default" in spec)}
        values.update({f"outputs.{out}": "x" for out in node.spec.get("outputs") or {}})
        try:
            render_command(node, values, ["python"])
        except ValueError as exc:  # shlex: an unclosed quote
            raise UserError(f"pipeline: job {node.name!r}: its command cannot be split into arguments "
                            f"({exc})") from None


class _ReuseIndex:
    """Finished jobs by reuse key (`<runs>/.cache.json`), so an unchanged job is taken from an earlier run."""

    def __init__(self, runs_dir: Path, enabled: bool):
        self.path = runs_dir / CACHE_INDEX
        self.enabled = enabled
        self.entries = json.loads(self.path.read_text()) if self.path.exists() else {}

    def finished(self, key: str) -> Path | None:
        folder = Path(self.entries[key]) if self.enabled and key in self.entries else None
        return folder if folder is not None and (folder / DONE).exists() else None

    def record(self, key: str, folder: Path) -> None:
        (folder / DONE).write_text(key)
        self.entries[key] = str(folder)
        self.path.write_text(json.dumps(self.entries, indent=1))


class _Values:
    """What each job's placeholders become, and what its reuse key records for each."""

    def __init__(self, pipeline: Pipeline, values_in: dict[str, str]):
        self.values_in = values_in
        declared = pipeline.doc.get("inputs") or {}
        self.data_inputs = {n for n, s in declared.items() if isinstance(s, dict) and s.get("type") in DATA_TYPES}
        self.fingerprints: dict[str, str] = {}  # data input -> its files' fingerprint, computed once a run
        self.keys: dict[str, str] = {}  # job -> reuse key
        self.code_digests: dict[Path, str] = {}

    def of(self, node: Node, done: dict[str, NodeResult]) -> tuple[dict[str, str], dict[str, str]]:
        """(values, identity): defaults, then literals, bindings to pipeline inputs and to upstream outputs."""
        values = {f"inputs.{key}": _render_value(spec["default"]) for key, spec in (node.spec.get("inputs") or {}).items()
                  if isinstance(spec, dict) and "default" in spec}
        identity = dict(values)
        upstream = {port: (src, out) for port, src, out in node.upstream()}
        for key, value in node.inputs.items():
            slot = f"inputs.{key}"
            if key in upstream:
                src, out = upstream[key]
                values[slot] = shlex.quote(str(done[src].folder / out))
                identity[slot] = f"{self.keys[src]}:{out}"
                continue
            match = _PARENT_INPUT.match(str(value)) if isinstance(value, str) else None
            values[slot] = self.values_in[match.group(1)] if match else _render_value(value)
            identity[slot] = values[slot]
            if match and match.group(1) in self.data_inputs:
                name = match.group(1)
                if name not in self.fingerprints:
                    self.fingerprints[name] = data_fingerprint(Path(values[slot]))
                identity[slot] += ":" + self.fingerprints[name]
                values[slot] = shlex.quote(values[slot])  # a local path may hold spaces; Azure's never do
        return values, identity

    def code_dir(self, node: Node) -> tuple[Path, str]:
        """The job's code snapshot folder (the spec's `code`) and its digest."""
        folder = (node.spec_path.parent / str(node.spec.get("code", "."))).resolve()
        if folder not in self.code_digests:
            self.code_digests[folder] = _code_digest(folder)
        return folder, self.code_digests[folder]


def _new_run_dir(runs_dir: Path) -> Path:
    run_dir = runs_dir / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():
        run_dir = runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _launch(node: Node, values: dict[str, str], folder: Path, code_dir: Path, processes: int, echo, step: str) -> float:
    """Run one job as a subprocess, output and log in `folder`; UserError with the log's tail when it fails."""
    python = [sys.executable]
    if processes > 1:  # one process needs no launcher: same code path, clearer logs
        python = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    argv = render_command(node, values, python)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_dir), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    with open(folder / LOG, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(argv) + "\n")
        log.flush()
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    seconds = time.perf_counter() - start
    if code != 0:
        lines = (folder / LOG).read_text(encoding="utf-8", errors="replace").splitlines()
        tail = lines[-TAIL_LINES:]
        # A launcher's own report can bury the node's one-line error; keep it in view.
        tail = [line for line in lines if line.startswith("error: ") and line not in tail][:1] + tail
        echo(f"{step} {node.name}: FAILED (exit {code}, {seconds:.1f}s)")
        for line in tail:
            echo(f"    {line}")
        raise UserError(f"job {node.name!r} failed with exit code {code}; full log: {folder / LOG}")
    return seconds


def run_pipeline(path: str | Path, overrides: dict[str, str] | None = None, *, runs_dir: str | Path = "runs",
                 nproc: int | None = None, reuse: bool = True, echo=print) -> RunResult:
    """Run every node of the pipeline in order; stop at the first failure with its log tail."""
    pipeline = load_pipeline(path)
    check_pipeline(pipeline)  # every check before the first job starts: nothing runs, no run folder
    _check_commands(pipeline)
    values_in = pipeline_inputs(pipeline, overrides or {})
    check_parameter_values(pipeline, values_in)
    order = topological_order(pipeline)
    runs_dir = Path(runs_dir).resolve()
    result = RunResult(_new_run_dir(runs_dir))
    index = _ReuseIndex(runs_dir, reuse)
    resolver = _Values(pipeline, values_in)
    echo(f"run {result.run_dir.name}: {len(order)} jobs, outputs under {result.run_dir}")
    for number, name in enumerate(order, 1):
        node, step = pipeline.nodes[name], f"[{number}/{len(order)}]"
        values, identity = resolver.of(node, result.nodes)
        code_dir, code = resolver.code_dir(node)
        processes = local_processes(node, nproc) if is_distributed(node.spec, node.raw) else 1
        key = reuse_key(node, spec=hashlib.sha256(node.spec_path.read_bytes()).hexdigest(), code=code,
                        identity=identity, processes=processes)
        resolver.keys[name] = key
        cached = index.finished(key)
        if cached is not None:
            result.nodes[name] = NodeResult(name, cached, True, 0.0)
            echo(f"{step} {name}: reused from {cached.parent.name}")
            continue
        folder = result.run_dir / name
        folder.mkdir()
        values.update({f"outputs.{out}": shlex.quote(str(folder / out)) for out in node.spec.get("outputs") or {}})
        seconds = _launch(node, values, folder, code_dir, processes, echo, step)
        index.record(key, folder)
        echo(f"{step} {name}: ok ({seconds:.1f}s{f', {processes} processes' if processes > 1 else ''})")
        result.nodes[name] = NodeResult(name, folder, False, seconds)
    return result
