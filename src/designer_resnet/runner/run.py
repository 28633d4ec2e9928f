"""Run a pipeline YAML locally: each node a subprocess, in dependency order.

Each node's outputs and log live under `<runs>/<run id>/<node>/`. A node whose
spec, inputs, parameters and code are unchanged since a finished run is reused
from that run, as the designer does.
"""

from __future__ import annotations

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

from ..errors import UserError
from ..specs import command_template, flavour, is_distributed, render
from .graph import Node, Pipeline, check_pipeline, check_port_types, load_pipeline, topological_order  # noqa: F401

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
    """min(requested, local GPUs), or 1 on a CPU-only machine, unless --nproc says otherwise."""
    if requested:
        return requested
    wanted = int(((node.raw.get("distribution") or {}).get("process_count_per_instance") or 1))
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # torch missing or broken: the node itself will say so
        gpus = 0
    return max(1, min(wanted, gpus)) if gpus else 1


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


def run_pipeline(path: str | Path, overrides: dict[str, str] | None = None, *, runs_dir: str | Path = "runs",
                 nproc: int | None = None, reuse: bool = True, echo=print) -> RunResult:
    """Run every node of the pipeline in order; stop at the first failure with its log tail."""
    pipeline = load_pipeline(path)
    check_pipeline(pipeline)  # every check before the first job starts: nothing runs, no run folder
    _check_commands(pipeline)
    values_in = pipeline_inputs(pipeline, overrides or {})
    order = topological_order(pipeline)
    runs_dir = Path(runs_dir).resolve()
    run_dir = runs_dir / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():
        run_dir = runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    index_path = runs_dir / CACHE_INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    digests: dict[str, str] = {}
    code_digests: dict[Path, str] = {}
    declared = pipeline.doc.get("inputs") or {}
    data_inputs = {n for n, spec in declared.items() if isinstance(spec, dict) and spec.get("type") in DATA_TYPES}
    fingerprints: dict[str, str] = {}
    result = RunResult(run_dir)
    echo(f"run {run_dir.name}: {len(order)} jobs, outputs under {run_dir}")
    for step, name in enumerate(order, 1):
        node = pipeline.nodes[name]
        values: dict[str, str] = {}
        for key, spec in (node.spec.get("inputs") or {}).items():
            if isinstance(spec, dict) and "default" in spec:
                values[f"inputs.{key}"] = _render_value(spec["default"])
        identity = dict(values)  # what the job's reuse key records for each value
        upstream = {port: (src, out) for port, src, out in node.upstream()}
        for key, value in node.inputs.items():
            slot = f"inputs.{key}"
            if key in upstream:
                src, out = upstream[key]
                values[slot] = shlex.quote(str(result.nodes[src].folder / out))
                identity[slot] = f"{digests[src]}:{out}"
                continue
            match = _PARENT_INPUT.match(str(value)) if isinstance(value, str) else None
            values[slot] = values_in[match.group(1)] if match else _render_value(value)
            identity[slot] = values[slot]
            if match and match.group(1) in data_inputs:
                if match.group(1) not in fingerprints:
                    fingerprints[match.group(1)] = data_fingerprint(Path(values[slot]))
                identity[slot] += ":" + fingerprints[match.group(1)]
                values[slot] = shlex.quote(values[slot])  # a local path may hold spaces; Azure's never do
        code_dir = (node.spec_path.parent / str(node.spec.get("code", "."))).resolve()
        if code_dir not in code_digests:
            code_digests[code_dir] = _code_digest(code_dir)
        distributed = is_distributed(node.spec, node.raw)
        nproc_here = local_processes(node, nproc) if distributed else 1
        digest = reuse_key(node, spec=hashlib.sha256(node.spec_path.read_bytes()).hexdigest(),
                           code=code_digests[code_dir], identity=identity, processes=nproc_here)
        digests[name] = digest
        cached = Path(index[digest]) if reuse and digest in index else None
        if cached is not None and (cached / DONE).exists():
            result.nodes[name] = NodeResult(name, cached, True, 0.0)
            echo(f"[{step}/{len(order)}] {name}: reused from {cached.parent.name}")
            continue

        folder = run_dir / name
        folder.mkdir()
        for out in node.spec.get("outputs") or {}:
            values[f"outputs.{out}"] = shlex.quote(str(folder / out))
        python = [sys.executable]
        if distributed and nproc_here > 1:  # one process needs no launcher: same code path, clearer logs
            python = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_here}"]
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
            echo(f"[{step}/{len(order)}] {name}: FAILED (exit {code}, {seconds:.1f}s)")
            for line in tail:
                echo(f"    {line}")
            raise UserError(f"job {name!r} failed with exit code {code}; full log: {folder / LOG}")
        (folder / DONE).write_text(digest)
        index[digest] = str(folder)
        index_path.write_text(json.dumps(index, indent=1))
        procs = f", {nproc_here} processes" if nproc_here > 1 else ""
        echo(f"[{step}/{len(order)}] {name}: ok ({seconds:.1f}s{procs})")
        result.nodes[name] = NodeResult(name, folder, False, seconds)
    return result
