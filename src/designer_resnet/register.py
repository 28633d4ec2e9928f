"""Register every component in an Azure ML workspace, so they appear in the designer's component list."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import UserError
from .workspace import ml_client

COMPONENTS = Path(__file__).resolve().parents[2] / "components"


def load_specs(folder: Path) -> list:
    """Every spec in `folder`, loaded and validated by azure-ai-ml (offline)."""
    os.environ.setdefault("AZURE_ML_INTERNAL_COMPONENTS_ENABLED", "true")
    from azure.ai.ml import load_component

    specs = sorted(folder.glob("*.yaml"))
    if not specs:
        raise UserError(f"--components-dir: no component specs (*.yaml) in {folder}")
    loaded = []
    for spec in specs:
        component = load_component(spec)
        result = component._validate()
        if not result.passed:
            raise UserError(f"{spec.name} does not validate: {result.error_messages}")
        loaded.append(component)
    return loaded


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="designer-resnet register", description=__doc__)
    p.add_argument("--subscription")
    p.add_argument("--resource-group")
    p.add_argument("--workspace")
    p.add_argument("--components-dir", type=Path, default=COMPONENTS, help="folder of specs (default: the repository's)")
    p.add_argument("--dry-run", action="store_true", help="load and validate every spec; register nothing")
    args = p.parse_args(argv)
    components = load_specs(args.components_dir)
    if args.dry_run:
        for c in components:
            print(f"would register {c.name}:{c.version} ({c.type})")
        return
    client = ml_client(args.subscription, args.resource_group, args.workspace)
    for c in components:
        registered = client.components.create_or_update(c)
        print(f"registered {registered.name}:{registered.version}")
