"""Load every spec and pipeline of one flavour with azure-ai-ml's own loaders, in a process of its own.

    python tests/spec_probe.py v2 | typed

Prints JSON: per spec what azure-ai-ml read (ports, parameters, command) and whether
it validates, and the same for the flavour's pipeline. The tests run this with
AZURE_ML_INTERNAL_COMPONENTS_ENABLED unset for v2 and set for typed, so the pytest
process itself never depends on the private flag.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAVOURS = {"v2": (REPO / "components", REPO / "pipelines" / "image_classification.yml"),
            "typed": (REPO / "components" / "typed", REPO / "pipelines" / "image_classification_typed.yml")}
_PORT_FIELDS = ("type", "default", "min", "max", "enum", "optional", "description")


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _port(port) -> dict:
    return {field: _plain(getattr(port, field, None)) for field in _PORT_FIELDS}


def _command(component) -> str:
    if component.type == "DistributedComponent":
        return component.launcher["type"] + " | " + component.launcher["additional_arguments"]
    return component.command


def summarise(component) -> dict:
    result = component._validate()
    distribution = getattr(component, "distribution", None)
    return {
        "name": component.name, "version": str(component.version), "type": component.type,
        "display_name": component.display_name, "description": component.description,
        "inputs": {k: _port(v) for k, v in component.inputs.items()},
        "outputs": {k: _port(v) for k, v in component.outputs.items()},
        "command": _command(component),
        "distribution": _plain(getattr(distribution, "type", None)) if distribution is not None else None,
        "valid": result.passed, "errors": _plain(result.error_messages),
    }


def main(flavour: str) -> int:
    if flavour == "typed":
        import azure.ai.ml._internal  # noqa: F401  (designer node types for pipelines)
    from azure.ai.ml import load_component, load_job

    folder, pipeline = FLAVOURS[flavour]
    report = {"flag": os.environ.get("AZURE_ML_INTERNAL_COMPONENTS_ENABLED"), "specs": {}, "load_errors": {}}
    for spec in sorted(folder.glob("*.yaml")):
        try:
            report["specs"][spec.stem] = summarise(load_component(spec))
        except Exception as exc:  # reported, and the test fails on it
            report["load_errors"][spec.stem] = f"{exc.__class__.__name__}: {exc}"
    try:
        job = load_job(pipeline)
        result = job._validate()
        report["pipeline"] = {"valid": result.passed, "errors": _plain(result.error_messages),
                              "jobs": {name: node.type for name, node in job.jobs.items()}}
    except Exception as exc:
        report["pipeline"] = {"valid": False, "errors": f"{exc.__class__.__name__}: {exc}", "jobs": {}}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
