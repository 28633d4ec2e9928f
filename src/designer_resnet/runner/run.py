"""Run a pipeline YAML locally: each node a subprocess, in dependency order.

Each node's outputs and log live under `<runs>/<run id>/<node>/`. A node whose
spec, inputs, parameters and code are unchanged since a finished run is reused
from that run, as the designer does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from ..arguments import int_in
from ..component_source import is_port, value_parser
from ..errors import UserError
from ..parallel import available_cpus, processes_per_node
from ..specs import code_folder, command_template, entry_script, flavour, is_distributed, is_parallel, render
from .graph import Node, Pipeline, check_pipeline, load_pipeline, topological_order
from .sweep import DEFAULT_MAX_TRIALS, SweepPlan, SweepResult, check_sweep, plan_trials, run_trials

_PARENT_INPUT = re.compile(r"^\$\{\{\s*parent\.inputs\.([\w-]+)\s*\}\}$")
CACHE_INDEX = ".cache.json"
LOG = "log.txt"
DONE = ".done"
TAIL_LINES = 20
DATA_TYPES = ("uri_folder", "uri_file")
# Values are pasted into a command line; one this long is a mistake (a path is at most 4,096 characters),
# and the operating system refuses an argument over 128 KiB only when the job starts.
MAX_VALUE_CHARS = 10_000

logger = logging.getLogger(__name__)


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
    sweeps: dict[str, SweepResult] = field(default_factory=dict)


def _shown(text: str, limit: int = 80) -> str:
    """`text` as an error line shows it: repr, cut to `limit` characters with its length."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"


def _value_problem(text: str) -> str | None:
    """Why a value cannot go into a command line, or None."""
    if len(text) > MAX_VALUE_CHARS:
        return f"is {len(text):,} characters long; the local runner takes at most {MAX_VALUE_CHARS:,}"
    if "\0" in text:
        return "holds a NUL character, which no command line can carry"
    return None


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`inputs.NAME=VALUE` strings -> {NAME: VALUE}; a value too long for a command line is refused."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("inputs.") or len(key) <= len("inputs."):
            raise UserError(f"--set: {_shown(item)} must look like inputs.NAME=VALUE")
        problem = _value_problem(value)
        if problem:
            raise UserError(f"--set {_shown(key)}: the value {_shown(value, 40)} {problem}; give a shorter value")
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
        raise UserError(f"--set: the pipeline has no input {_shown(unknown[0])}; it has {', '.join(declared)}")
    values = {}
    for name, spec in declared.items():
        if name in overrides:
            value = overrides[name]
            if isinstance(spec, dict) and spec.get("type") in DATA_TYPES:
                value = str(_existing_path(name, value))
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


def _existing_path(name: str, value: str) -> Path:
    """The local folder or file an override of data input `name` gives, resolved; UserError when there is none."""
    problem = _value_problem(value) or ("is empty" if not value.strip() else None)
    try:
        path = None if problem else Path(value).expanduser()
        if path is not None and path.exists():
            return path.resolve()
    except (OSError, RuntimeError) as exc:  # a name over 255 bytes, a link loop, an unknown ~user
        problem = f"cannot be used ({getattr(exc, 'strerror', None) or exc})"
    raise UserError(f"--set inputs.{name}: {_shown(value)} {problem or 'does not exist'}; "
                    "give a local folder or file")


def _resolved(value, values_in: dict[str, str]) -> tuple[str, str | None]:
    """A job's value as text, and the pipeline input it is bound to (`${{parent.inputs.NAME}}`); None for a literal."""
    match = _PARENT_INPUT.match(value) if isinstance(value, str) else None
    if match and match.group(1) in values_in:
        return values_in[match.group(1)], match.group(1)
    return _render_value(value), None


def _parameter_value(node: Node, key: str, values_in: dict[str, str]) -> tuple[str, str] | None:
    """(text, where it came from) of one parameter of a job: bound, literal, or the component's default."""
    if key in node.sampled:
        return node.sampled[key], f"jobs.{node.name}.search_space.{key}, trial {node.trial}"
    if key in node.inputs:
        text, bound = _resolved(node.inputs[key], values_in)
        return text, f"pipeline input {bound}" if bound else f"jobs.{node.name}.inputs.{key}"
    entry = node.spec["inputs"][key]
    return (_render_value(entry["default"]), "the component's default") if "default" in entry else None


def check_parameter_values(pipeline: Pipeline, values_in: dict[str, str]) -> None:
    """Every parameter value a job would get is one its component accepts (type, range, enum), as on Azure ML."""
    for node in pipeline.nodes.values():
        for key, entry in (node.spec.get("inputs") or {}).items():
            try:
                if is_port(entry):
                    continue
                parse = value_parser(entry, azure=True)
            except UserError as exc:
                raise UserError(f"pipeline: job {node.name!r}: input {key!r} of {node.spec_path}: {exc}; "
                                "fix the component spec") from None
            found = _parameter_value(node, key, values_in)
            if found is None:
                continue
            text, origin = found
            problem = _value_problem(text)
            if problem:
                raise UserError(f"pipeline: job {node.name!r} input {key!r} (from {origin}): the value "
                                f"{_shown(text, 40)} {problem}; give a shorter value")
            try:
                parse(text)
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"pipeline: job {node.name!r} input {key!r} (from {origin}): {exc}") from None


def render_command(node: Node, values: dict[str, str], python: list[str]) -> list[str]:
    """The node's command as argv, rendered as Azure ML renders its flavour; `python` replaces the leading python.

    A parallel job's program arguments follow `python` as they are: `python` is then the local parallel driver.
    """
    template = command_template(node.spec)
    if not template:
        raise UserError(f"pipeline: component of job {node.name!r} has no command")
    try:
        rendered = render(template, flavour(node.spec), values)
    except UserError as exc:
        raise UserError(f"pipeline: job {node.name!r}: {exc}") from None
    if is_parallel(node.spec):
        return python + rendered
    if rendered[:1] != ["python"]:
        raise UserError(f"pipeline: job {node.name!r}: only `python ...` commands run locally")
    return python + rendered[1:]


# A parallel job's settings the local driver follows: (key path, flag of runner/parallel.py, default).
_PARALLEL_SETTINGS = ((("mini_batch_size",), "--mini-batch-size", "10"),
                      (("retry_settings", "max_retries"), "--max-retries", "3"),
                      (("mini_batch_error_threshold",), "--mini-batch-error-threshold", "-1"))
_PARALLEL_WORKERS = (("resources", "instance_count"), ("max_concurrency_per_instance",))


def _setting(node: Node, path: tuple[str, ...], values_in: dict[str, str]):
    """A parallel setting: the job's (a literal or a pipeline input), else the component's; None when neither sets it."""
    for source in (node.raw, node.spec):
        value = source
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return _resolved(value, values_in)[0]
    return None


def parallel_driver(node: Node, values: dict[str, str], values_in: dict[str, str], code_dir: Path) -> list[str]:
    """The local parallel driver's command for a parallel job, up to its `--` (the program arguments follow).

    Its worker processes stand in for Azure's nodes x max_concurrency_per_instance, as many as the CPUs allow.
    """
    flags = []
    for path, flag, fallback in _PARALLEL_SETTINGS:
        value = _setting(node, path, values_in)
        flags += [flag, str(value if value is not None else fallback)]
    workers = 1
    for path in _PARALLEL_WORKERS:
        workers *= int(_setting(node, path, values_in) or 1)
    input_data = render(str(node.spec.get("input_data") or ""), "v2", values)
    if len(input_data) != 1:
        raise UserError(f"pipeline: job {node.name!r}: its input_data must name one input, as ${{{{inputs.x}}}}")
    return [sys.executable, "-m", "designer_resnet.runner.parallel", "--entry-script",
            str(code_dir / entry_script(node.spec)), "--input-data", input_data[0], *flags,
            "--processes", str(max(1, min(workers, available_cpus()))), "--"]


def _code_digest(code_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(code_dir.rglob("*.py")):
        digest.update(str(path.relative_to(code_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def data_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of every file under a data input, through symbolic links.

    The path alone would let a rerun reuse jobs after the images in the same
    folder changed; the designer reuses only on unchanged data. Convert follows
    links (class folders of links to photos), so the fingerprint does too.
    """
    digest = hashlib.sha256()
    if path.is_file():
        files = [(path.name, path.stat())]
    else:  # ordered by path parts, as before links were followed: a folder without links keeps its fingerprint
        files = sorted(_files_below(path), key=lambda found: found[0].split("/"))
    for name, stat in files:
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _files_below(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path under root, stat) of every file below root, following links; a folder reached twice (a link
    cycle, or two links to one folder) is read once."""
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        try:
            stat = os.stat(folder)
        except OSError:
            subfolders[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        for name in names:
            file = Path(folder) / name
            try:
                yield file.relative_to(root).as_posix(), file.stat()
            except OSError:  # a broken link: nothing Convert can read
                continue


_COUNTS = (("distribution", "process_count_per_instance"), ("resources", "instance_count"))


def check_process_counts(pipeline: Pipeline, values_in: dict[str, str]) -> None:
    """A job's processes per node and node count, literal or bound to a pipeline input, are whole numbers >= 1.

    A count bound to a pipeline input is replaced by its value in the job, as Azure ML resolves it.
    """
    count = int_in(1)
    for node in pipeline.nodes.values():
        for section, key in _COUNTS:
            settings = node.raw.get(section)
            if settings is None:
                continue
            if not isinstance(settings, dict):
                raise UserError(f"pipeline: job {node.name!r}: `{section}` must be a mapping, got {settings!r}")
            if key not in settings:
                continue
            text, bound = _resolved(settings[key], values_in)
            try:
                settings[key] = count(text)
            except argparse.ArgumentTypeError as exc:
                origin = f"pipeline input {bound}" if bound else f"jobs.{node.name}.{section}.{key}"
                raise UserError(f"pipeline: job {node.name!r} {section}.{key} (from {origin}): {exc}") from None


def local_processes(node: Node, requested: int | None) -> int:
    """The node's processes per node, as many as local GPUs allow (1 on CPU), unless --nproc says otherwise.

    The job's distribution, else its component's: a sweep trial always runs with its component's.
    """
    if requested:
        return requested
    distribution = node.raw.get("distribution") or node.spec.get("distribution")
    wanted = int(((distribution if isinstance(distribution, dict) else {}).get("process_count_per_instance") or 1))
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
    parallel = {key: node.raw[key] for key in ("mini_batch_size", "max_concurrency_per_instance", "retry_settings",
                                               "mini_batch_error_threshold") if key in node.raw}
    if parallel:  # how a parallel job was split changes nothing it writes, but its log and timing: kept apart
        parts["parallel"] = parallel
    if is_distributed(node.spec, node.raw):
        parts["processes"] = processes
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _stand_ins(node: Node) -> dict[str, str]:
    """A stand-in value for every placeholder of the job's command that will have a value."""
    values = {f"inputs.{key}": "x" for key, spec in (node.spec.get("inputs") or {}).items()
              if key in node.inputs or (isinstance(spec, dict) and "default" in spec)}
    values.update({f"outputs.{out}": "x" for out in node.spec.get("outputs") or {}})
    return values


def _check_commands(pipeline: Pipeline) -> None:
    """Render every job's command with stand-in values, so a command that cannot run locally fails before any job."""
    for node in pipeline.nodes.values():
        values = _stand_ins(node)
        try:
            render_command(node, values, ["python"])
        except ValueError as exc:  # shlex: an unclosed quote
            raise UserError(f"pipeline: job {node.name!r}: its command cannot be split into arguments "
                            f"({exc})") from None


def _splits(node: Node, values: dict[str, str]) -> bool:
    try:
        render_command(node, values, ["python"])
    except ValueError:  # shlex: an unclosed quote
        return False
    return True


def check_command_values(pipeline: Pipeline, values_in: dict[str, str]) -> None:
    """Render every job's command with its real parameter values, so a value that breaks the command line
    (an unclosed quote) is refused before any job runs, naming the input. Ports keep stand-ins: their paths
    are quoted."""
    declared = pipeline.doc.get("inputs") or {}
    data_inputs = {f"pipeline input {n}" for n, s in declared.items()
                   if isinstance(s, dict) and s.get("type") in DATA_TYPES}
    for node in pipeline.nodes.values():
        params = {}
        for key, entry in (node.spec.get("inputs") or {}).items():
            found = None if not isinstance(entry, dict) or is_port(entry) else _parameter_value(node, key, values_in)
            if found is not None:
                text, origin = found
                params[f"inputs.{key}"] = (shlex.quote(text) if origin in data_inputs else text, origin)
        values = {**_stand_ins(node), **{slot: text for slot, (text, _) in params.items()}}
        if _splits(node, values):
            continue
        for slot, (text, origin) in params.items():
            if _splits(node, {**values, slot: "x"}):
                raise UserError(f"pipeline: job {node.name!r} {slot} (from {origin}): the value {_shown(text, 40)} "
                                "leaves a quote open in the job's command line (Azure ML puts a value into the "
                                "command as it is); balance or remove its quotes")
        raise UserError(f"pipeline: job {node.name!r}: its parameter values leave a quote open in the job's command "
                        "line (Azure ML puts a value into the command as it is); balance or remove their quotes")


class _ReuseIndex:
    """Finished jobs by reuse key (`<runs>/.cache.json`), so an unchanged job is taken from an earlier run.

    The index is only a shortcut: an unreadable one is read as empty (with a warning), a job is reused
    only when its folder's `.done` holds the key, and the index is replaced whole, never half-written.
    """

    def __init__(self, runs_dir: Path, enabled: bool):
        self.path = runs_dir / CACHE_INDEX
        self.enabled = enabled
        self.entries = self._read()

    def _read(self) -> dict[str, str]:
        if not self.path.exists() and not self.path.is_symlink():
            return {}
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problem = getattr(exc, "strerror", None) or str(exc)
        else:
            if isinstance(entries, dict) and all(isinstance(v, str) for v in entries.values()):
                return entries
            problem = "not a mapping of reuse keys to job folders"
        logger.warning("%s is unreadable (%s); no job is reused from earlier runs, and the file is rewritten",
                       self.path, problem)
        return {}

    def finished(self, key: str) -> Path | None:
        folder = Path(self.entries[key]) if self.enabled and key in self.entries else None
        try:
            return folder if folder is not None and (folder / DONE).read_text(encoding="utf-8") == key else None
        except (OSError, UnicodeDecodeError):
            return None

    def record(self, key: str, folder: Path) -> None:
        (folder / DONE).write_text(key, encoding="utf-8")
        self.entries[key] = str(folder)
        temp = self.path.with_name(f"{CACHE_INDEX}.{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(self.entries, indent=1), encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as exc:
            logger.warning("%s: could not record job folder %s for reuse (%s); a rerun runs it again",
                           self.path, folder, exc.strerror or exc)
        finally:
            temp.unlink(missing_ok=True)


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
            values[slot], name = _resolved(value, self.values_in)
            identity[slot] = values[slot]
            if name in self.data_inputs:
                if name not in self.fingerprints:
                    self.fingerprints[name] = data_fingerprint(Path(values[slot]))
                identity[slot] += ":" + self.fingerprints[name]
                values[slot] = shlex.quote(values[slot])  # a local path may hold spaces; Azure's never do
        return values, identity

    def code_dir(self, node: Node) -> tuple[Path, str]:
        """The job's code snapshot folder (the spec's `code`) and its digest."""
        folder = (node.spec_path.parent / code_folder(node.spec)).resolve()
        if folder not in self.code_digests:
            self.code_digests[folder] = _code_digest(folder)
        return folder, self.code_digests[folder]


def _new_run_dir(runs_dir: Path) -> Path:
    run_dir = runs_dir / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():
        run_dir = runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    try:
        run_dir.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"--runs-dir: cannot make a run folder in {runs_dir} ({exc.strerror or exc}); "
                        "give a writable folder") from None
    return run_dir


def _launch(node: Node, values: dict[str, str], folder: Path, code_dir: Path, processes: int, echo, step: str,
            values_in: dict[str, str]) -> float:
    """Run one job as a subprocess, output and log in `folder`; UserError with the log's tail when it fails."""
    python = [sys.executable]
    if is_parallel(node.spec):
        python = parallel_driver(node, values, values_in, code_dir)
    elif processes > 1:  # one process needs no launcher: same code path, clearer logs
        python = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    argv = render_command(node, values, python)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_dir), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    with open(folder / LOG, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(argv) + "\n")
        log.flush()
        try:
            code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
        except OSError as exc:  # E2BIG: the command line is longer than the system takes
            raise UserError(f"job {node.name!r} could not start ({exc.strerror or exc}); "
                            "shorten its parameter values") from None
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


def _plan_sweeps(pipeline: Pipeline, max_trials: int) -> dict[str, SweepPlan]:
    """Every sweep node's definition checked and its trials drawn, before any job runs."""
    return {name: plan_trials(check_sweep(node, _render_value), max_trials, _render_value)
            for name, node in pipeline.nodes.items() if node.is_sweep}


def _as_run(pipeline: Pipeline, plans: dict[str, SweepPlan]) -> Pipeline:
    """The pipeline as its jobs run: each sweep node replaced by its trials, so their values are checked too."""
    nodes = {}
    for name, node in pipeline.nodes.items():
        if name in plans:
            nodes.update({f"{name}.trial_{trial.trial}": trial for trial in plans[name].trials})
        else:
            nodes[name] = node
    return Pipeline(pipeline.path, pipeline.doc, nodes)


@dataclass
class _Run:
    """What every job of one run shares: its folder and results, the reuse index, the values, the echo."""

    result: RunResult
    index: _ReuseIndex
    resolver: _Values
    values_in: dict[str, str]
    nproc: int | None
    echo: Callable[[str], None]


def _run_job(run: _Run, node: Node, folder: Path, step: str,
             note: Callable[[Path], str] | None = None) -> tuple[NodeResult, str]:
    """One job: reused when a finished run had the same key, else run into `folder`; (its result, its key).

    `note(folder)`: text added to the job's status line once it has its outputs.
    """
    values, identity = run.resolver.of(node, run.result.nodes)
    code_dir, code = run.resolver.code_dir(node)
    processes = local_processes(node, run.nproc) if is_distributed(node.spec, node.raw) else 1
    key = reuse_key(node, spec=hashlib.sha256(node.spec_path.read_bytes()).hexdigest(), code=code,
                    identity=identity, processes=processes)
    cached = run.index.finished(key)
    if cached is not None:
        run_id = (cached.parent if node.trial is None else cached.parent.parent).name
        run.echo(f"{step} {node.name}: reused from {run_id}{note(cached) if note else ''}")
        return NodeResult(node.name, cached, True, 0.0), key
    folder.mkdir(parents=True)
    values.update({f"outputs.{out}": shlex.quote(str(folder / out)) for out in node.spec.get("outputs") or {}})
    seconds = _launch(node, values, folder, code_dir, processes, run.echo, step, run.values_in)
    run.index.record(key, folder)
    run.echo(f"{step} {node.name}: ok ({seconds:.1f}s{f', {processes} processes' if processes > 1 else ''})"
             f"{note(folder) if note else ''}")
    return NodeResult(node.name, folder, False, seconds), key


def run_pipeline(path: str | Path, overrides: dict[str, str] | None = None, *, runs_dir: str | Path = "runs",
                 nproc: int | None = None, reuse: bool = True, max_trials: int = DEFAULT_MAX_TRIALS,
                 echo=print) -> RunResult:
    """Run every node of the pipeline in order; stop at the first failure with its log tail.

    A sweep node runs at most `max_trials` trials (and at most its max_total_trials).
    """
    pipeline = load_pipeline(path)
    check_pipeline(pipeline)  # every check before the first job starts: nothing runs, no run folder
    plans = _plan_sweeps(pipeline, max_trials)
    as_run = _as_run(pipeline, plans)
    _check_commands(as_run)
    values_in = pipeline_inputs(pipeline, overrides or {})
    check_parameter_values(as_run, values_in)
    check_process_counts(pipeline, values_in)
    check_command_values(as_run, values_in)
    order = topological_order(pipeline)
    runs_dir = Path(runs_dir).resolve()
    run = _Run(RunResult(_new_run_dir(runs_dir)), _ReuseIndex(runs_dir, reuse), _Values(pipeline, values_in),
               values_in, nproc, echo)
    echo(f"run {run.result.run_dir.name}: {len(order)} jobs, outputs under {run.result.run_dir}")
    for number, name in enumerate(order, 1):
        node, step = pipeline.nodes[name], f"[{number}/{len(order)}]"
        if name in plans:  # its trials, each a job; the best one's folder and key stand for the node
            sweep, result, key = run_trials(plans[name], partial(_run_job, run), run.result.run_dir / name, step,
                                            echo)
            run.result.sweeps[name] = sweep
            result = NodeResult(name, result.folder, all(t.reused for t in sweep.trials), sweep.seconds)
        else:
            result, key = _run_job(run, node, run.result.run_dir / name, step)
        run.resolver.keys[name] = key
        run.result.nodes[name] = result
    return run.result
