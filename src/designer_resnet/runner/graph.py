"""A pipeline YAML as a graph of component nodes, and its port-type check.

Both flavours load: v2 jobs name their spec as a relative path
(`component: ../components/resnet.yaml`), designer-typed jobs as
`file:<path>`. Port types are the designer's in both (see specs.port_type).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..directories.files import read_port_file
from ..errors import UserError
from ..specs import accepts, command_template, flavour, placeholders, port_type

FILE_PREFIX = "file:"
SWEEP = "sweep"  # a node of this type runs its `trial` component once per sampled point of its search space
_BINDING = re.compile(r"^\$\{\{\s*parent\.(inputs|jobs)\.([\w-]+)(?:\.outputs\.([\w-]+))?\s*\}\}$")
# What Azure ML accepts as a node name (azure.ai.ml._utils.utils.is_valid_node_name); the name is also the
# job's folder under runs/<run id>/, so nothing else may reach the file system.
JOB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,254}")


@dataclass
class Node:
    name: str
    spec_path: Path
    spec: dict
    inputs: dict = field(default_factory=dict)  # input name -> literal value or binding string
    raw: dict = field(default_factory=dict)
    # A sweep trial: the values it drew (input name -> text), also in `inputs`, and its number from 1.
    sampled: dict = field(default_factory=dict)
    trial: int | None = None

    @property
    def is_sweep(self) -> bool:
        return self.raw.get("type") == SWEEP and not self.sampled

    @property
    def search_space(self) -> dict:
        """A sweep node's search space (input name -> distribution); empty for any other node."""
        space = self.raw.get("search_space") if self.is_sweep else None
        return space if isinstance(space, dict) else {}

    def sets(self, key: str) -> bool:
        """True when the job gives input `key` a value: bound, literal, or swept."""
        return key in self.inputs or key in self.search_space

    def port_type(self, direction: str, port: str) -> str | None:
        """The designer port type of one of the component's inputs or outputs (None: no such port)."""
        return port_type(self.spec, direction, port)

    def upstream(self) -> list[tuple[str, str, str]]:
        """(input name, source node, source output) for each connection into this node."""
        links = []
        for name, value in self.inputs.items():
            match = _BINDING.match(str(value)) if isinstance(value, str) else None
            if match and match.group(1) == "jobs":
                links.append((name, match.group(2), match.group(3)))
        return links


@dataclass
class Pipeline:
    path: Path
    doc: dict
    nodes: dict[str, Node]


def _kind(value) -> str:
    return type(value).__name__


def load_pipeline(path: str | Path) -> Pipeline:
    """Read a pipeline YAML and the component spec of every node."""
    path = Path(path)
    doc = read_port_file(path, "YAML", input_name="pipeline", fix="give the pipeline's YAML file", kind=None)
    if doc is None:
        raise UserError(f"pipeline: {path} is empty")
    if not isinstance(doc, dict):
        raise UserError(f"pipeline: {path} must be a mapping with `jobs`, got a {_kind(doc)}")
    jobs = doc.get("jobs")
    if jobs is not None and not isinstance(jobs, dict):
        raise UserError(f"pipeline: {path}: `jobs` must be a mapping of job names to jobs, got a {_kind(jobs)}")
    if not jobs:
        raise UserError(f"pipeline: {path} has no jobs")
    if not isinstance(doc.get("inputs") or {}, dict):
        raise UserError(f"pipeline: {path}: `inputs` must be a mapping of input names to values, "
                        f"got a {_kind(doc['inputs'])}")
    nodes = {}
    specs: dict[Path, dict] = {}  # a spec many jobs share is read once
    for name, job in jobs.items():
        if not isinstance(name, str) or not JOB_NAME.fullmatch(name):
            shown = repr(name) if len(str(name)) <= 80 else f"{str(name)[:80]!r}..."
            raise UserError(f"pipeline: {path}: job name {shown} is not one Azure ML accepts; use lowercase "
                            "letters, digits and _, starting with a letter or _, at most 255 characters "
                            "(e.g. convert_train)")
        if not isinstance(job, dict):
            raise UserError(f"pipeline: job {name!r} must be a mapping with a `component`, got {job!r}")
        inputs = job.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise UserError(f"pipeline: job {name!r}: `inputs` must be a mapping of input names to values, "
                            f"got a {_kind(inputs)}")
        reference = "trial" if job.get("type") == SWEEP else "component"
        spec_path = _spec_path(path, name, str(job.get(reference, "")), reference)
        if spec_path not in specs:
            spec = read_port_file(spec_path, "YAML", input_name=f"pipeline: job {name!r}: component spec file",
                                  fix="give the component's YAML file", kind=None)
            try:
                flavour(spec)
            except UserError as exc:
                raise UserError(f"pipeline: job {name!r}: {spec_path}: {exc}") from None
            for direction in ("inputs", "outputs"):
                if not isinstance(spec.get(direction) or {}, dict):
                    raise UserError(f"pipeline: job {name!r}: {spec_path}: `{direction}` must be a mapping, "
                                    f"got a {_kind(spec[direction])}")
            specs[spec_path] = spec
        # An input given as a mapping (`path:` with Azure's `mode:`, how the node reads it) runs from its path.
        inputs = {port: value["path"] if isinstance(value, dict) and "path" in value else value
                  for port, value in inputs.items()}
        nodes[name] = Node(name, spec_path, specs[spec_path], inputs, job)
    return Pipeline(path, doc, nodes)


def _spec_path(pipeline_path: Path, job: str, ref: str, reference: str = "component") -> Path:
    """The spec file a job's `component` (a sweep's `trial`) names: `file:<path>` or a plain relative path."""
    local = ref[len(FILE_PREFIX):] if ref.startswith(FILE_PREFIX) else ref
    if not local.endswith((".yaml", ".yml")) or local.startswith("azureml:"):
        raise UserError(f"pipeline: job {job!r} must name its {reference} as a local spec file "
                        f"(../components/<name>.yaml), got {ref!r}; registered components run only on Azure ML")
    return (pipeline_path.parent / local).resolve()


def check_port_types(pipeline: Pipeline) -> None:
    """Every connection joins an output to an input of the same port type (AnyDirectory takes any)."""
    for node in pipeline.nodes.values():
        for port, source, output in node.upstream():
            if source not in pipeline.nodes:
                raise UserError(f"pipeline: {node.name}.{port} is connected to unknown job {source!r}")
            wanted = node.port_type("inputs", port)
            given = pipeline.nodes[source].port_type("outputs", output)
            if given is None:
                raise UserError(f"pipeline: {node.name}.{port} is connected to {source}.{output}, "
                                f"which is not an output of {source}")
            if wanted is None:
                raise UserError(f"pipeline: {node.name} has no input {port!r}")
            if not accepts(wanted, given):
                raise UserError(f"pipeline: {source}.{output} ({given}) cannot connect to {node.name}.{port} ({wanted}); "
                                f"connect an output of type {wanted}")


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_pipeline(pipeline: Pipeline) -> None:
    """Everything about the pipeline that would otherwise fail only when a job's turn comes.

    Every job input the component declares, every binding to a declared pipeline
    input or to an output of a job, every required input bound or defaulted, every
    placeholder of the command declared, port types matching, and no cycle.
    """
    declared = pipeline.doc.get("inputs") or {}
    for node in pipeline.nodes.values():
        ports = node.spec.get("inputs") or {}
        outputs = node.spec.get("outputs") or {}
        kind = flavour(node.spec)
        for key, value in node.inputs.items():
            if key not in ports:
                listed = ", ".join(ports) if ports else "none"
                raise UserError(f"pipeline: job {node.name!r} has no input {key!r}{_closest(key, ports)}; "
                                f"the inputs of {node.spec_path.name} are: {listed}")
            if not isinstance(value, str) or "${{" not in value:
                continue
            match = _BINDING.match(value)
            if not match or (match.group(1) == "jobs") != (match.group(3) is not None):
                raise UserError(f"pipeline: job {node.name!r}: input {key!r} has {value!r}, which is not a binding "
                                "this runner knows; use ${{parent.inputs.NAME}} or ${{parent.jobs.JOB.outputs.NAME}}")
            if match.group(1) == "inputs" and match.group(2) not in declared:
                target = match.group(2)
                raise UserError(f"pipeline: job {node.name!r}: input {key!r} is bound to pipeline input {target!r}, "
                                f"which the pipeline does not declare{_closest(target, declared)}; it declares "
                                f"{', '.join(declared) if declared else 'no inputs'}")
        for key, spec in ports.items():
            required = not (isinstance(spec, dict) and (spec.get("optional") or "default" in spec))
            if required and not node.sets(key):
                raise UserError(f"pipeline: job {node.name!r}: input {key!r} is required; bind it or give it a value "
                                f"(the component has no default)")
        template = command_template(node.spec)
        if not template:
            raise UserError(f"pipeline: component of job {node.name!r} has no command")
        for direction, port in sorted(placeholders(template, kind, outside_optional=True)):
            if port not in (ports if direction == "inputs" else outputs):
                raise UserError(f"pipeline: job {node.name!r}: the command needs {direction}.{port}, which the "
                                f"component does not declare ({node.spec_path})")
            if direction == "inputs" and not node.sets(port) and not (
                    isinstance(ports[port], dict) and "default" in ports[port]):
                raise UserError(f"pipeline: job {node.name!r}: the command needs inputs.{port}, which is optional "
                                f"but neither bound nor defaulted; bind it")
    check_port_types(pipeline)
    topological_order(pipeline)


def topological_order(pipeline: Pipeline) -> list[str]:
    """Node names so that every node comes after the nodes it reads from; a cycle is an error.

    Depth-first with an explicit stack, so a chain of any length is ordered (no recursion limit).
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: ordered

    def sources(name: str):
        return iter([source for _, source, _ in pipeline.nodes[name].upstream() if source in pipeline.nodes])

    for root in pipeline.nodes:
        if state.get(root):
            continue
        state[root] = 1
        stack = [(root, sources(root))]
        while stack:
            name, pending = stack[-1]
            for source in pending:
                if state.get(source) == 2:
                    continue
                if state.get(source) == 1:
                    trail = [n for n, _ in stack]
                    cycle = trail[trail.index(source):] + [source]
                    raise UserError(f"pipeline: jobs form a cycle: {' -> '.join(cycle)}")
                state[source] = 1
                stack.append((source, sources(source)))
                break
            else:
                stack.pop()
                state[name] = 2
                order.append(name)
    return order
