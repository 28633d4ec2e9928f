"""A pipeline YAML as a graph of component nodes, and its port-type check.

Both flavours load: v2 jobs name their spec as a relative path
(`component: ../components/resnet.yaml`), designer-typed jobs as
`file:<path>`. Port types are the designer's in both (see specs.port_type).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError
from ..specs import ANY_PORT, flavour, port_type

FILE_PREFIX = "file:"
_BINDING = re.compile(r"^\$\{\{\s*parent\.(inputs|jobs)\.([\w-]+)(?:\.outputs\.([\w-]+))?\s*\}\}$")


@dataclass
class Node:
    name: str
    spec_path: Path
    spec: dict
    inputs: dict = field(default_factory=dict)  # input name -> literal value or binding string
    raw: dict = field(default_factory=dict)

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


def load_pipeline(path: str | Path) -> Pipeline:
    """Read a pipeline YAML and the component spec of every node."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"pipeline: {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UserError(f"pipeline: {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    if not isinstance(jobs, dict) or not jobs:
        raise UserError(f"pipeline: {path} has no jobs")
    nodes = {}
    for name, job in jobs.items():
        if not isinstance(job, dict):
            raise UserError(f"pipeline: job {name!r} must be a mapping with a `component`, got {job!r}")
        spec_path = _spec_path(path, name, str(job.get("component", "")))
        try:
            spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"pipeline: job {name!r}: component spec {spec_path} does not exist") from None
        except yaml.YAMLError as exc:
            raise UserError(f"pipeline: job {name!r}: component spec {spec_path} is not valid YAML "
                            f"({str(exc).splitlines()[0]})") from None
        try:
            flavour(spec)
        except UserError as exc:
            raise UserError(f"pipeline: job {name!r}: {spec_path}: {exc}") from None
        nodes[name] = Node(name, spec_path, spec, dict(job.get("inputs") or {}), job)
    return Pipeline(path, doc, nodes)


def _spec_path(pipeline_path: Path, job: str, ref: str) -> Path:
    """The spec file a job's `component` names: `file:<path>` or a plain relative path."""
    local = ref[len(FILE_PREFIX):] if ref.startswith(FILE_PREFIX) else ref
    if not local.endswith((".yaml", ".yml")) or local.startswith("azureml:"):
        raise UserError(f"pipeline: job {job!r} must name its component as a local spec file "
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
            if wanted != ANY_PORT and wanted != given:
                raise UserError(f"pipeline: {source}.{output} ({given}) cannot connect to {node.name}.{port} ({wanted}); "
                                f"connect an output of type {wanted}")


def topological_order(pipeline: Pipeline) -> list[str]:
    """Node names so that every node comes after the nodes it reads from; a cycle is an error."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise UserError(f"pipeline: jobs form a cycle: {' -> '.join(trail + (name,))}")
        state[name] = 1
        for _, source, _ in pipeline.nodes[name].upstream():
            if source in pipeline.nodes:
                visit(source, trail + (name,))
        state[name] = 2
        order.append(name)

    for name in pipeline.nodes:
        visit(name, ())
    return order
