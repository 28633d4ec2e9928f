"""Register the components in an Azure ML workspace or registry, so they appear in the designer's component list.

The v2 command components (components/*.yaml), then the pipeline components
(components/pipeline/*.yaml: whole pipelines as one designer block) by default;
`--typed` registers the designer-typed ones (components/typed/, named <name>_typed)
instead. `--registry NAME` publishes to an Azure ML registry rather than a workspace:
every workspace that can read the registry then lists the components in the
designer's asset library. Each component is registered at the version its spec
carries (the package version). Azure ML keeps a registered version unchangeable, in a
workspace and a registry alike: registering an unchanged spec again leaves it as it
is, and a spec whose content changed needs a new version (bump
`designer_resnet.__version__` and run `python components/generate.py`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from . import assets
from .arguments import ComponentArgumentParser
from .errors import UserError
from .workspace import ml_client


# Pipeline components sit in this sub-folder of the specs' folder; they refer to the specs beside them.
PIPELINE_SUBFOLDER = "pipeline"


def load_specs(folder: Path, *, typed: bool = False) -> list:
    """Every spec in `folder`, then in its pipeline/ sub-folder, loaded and validated by azure-ai-ml (offline)."""
    if typed:  # azure-ai-ml loads designer-typed specs only behind this flag
        os.environ["AZURE_ML_INTERNAL_COMPONENTS_ENABLED"] = "true"
    from azure.ai.ml import load_component

    if not folder.is_dir():
        raise UserError(f"--components-dir: {folder} is not a folder; give the folder of component specs")
    specs = sorted(folder.glob("*.yaml"))
    if not typed:  # the designer-typed flavour has no pipeline components
        specs += sorted((folder / PIPELINE_SUBFOLDER).glob("*.yaml"))
    if not specs:
        raise UserError(f"--components-dir: no component specs (*.yaml) in {folder}")
    loaded = []
    for spec in specs:
        try:
            component = load_component(spec)
        except Exception as exc:  # azure-ai-ml's schema errors are multi-line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            hint = "; the designer-typed specs need --typed" if "private feature" in str(exc) else ""
            raise UserError(f"{spec}: does not load in azure-ai-ml ({first}){hint}") from None
        result = component._validate()
        if not result.passed:
            raise UserError(f"{spec.name} does not validate: {result.error_messages}")
        loaded.append(component)
    return loaded


def main(argv=None) -> None:
    p = ComponentArgumentParser(prog="designer-resnet register", description=__doc__.splitlines()[0])
    p.add_argument("--subscription")
    p.add_argument("--resource-group")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--workspace")
    target.add_argument("--registry", help="publish to this Azure ML registry instead of a workspace")
    p.add_argument("--typed", action="store_true",
                   help="register the designer-typed components (components/typed/) instead of the v2 ones")
    p.add_argument("--components-dir", type=Path, default=None,
                   help="folder of specs (default: the package's components/, or components/typed/ with --typed)")
    p.add_argument("--dry-run", action="store_true", help="load and validate every spec; register nothing")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="designer-resnet-") as scratch:
        if args.components_dir:
            folder = args.components_dir
        else:  # the package's specs beside a clean copy of this package, their code snapshot
            staged = assets.stage(Path(scratch))
            folder = staged / (assets.TYPED if args.typed else assets.COMPONENTS)
        _register(load_specs(folder, typed=args.typed), args)


def _register(components: list, args: argparse.Namespace) -> None:
    where = f" in registry {args.registry}" if args.registry else ""
    if args.dry_run:
        for c in components:
            print(f"would register {c.name}:{c.version} ({c.type}){where}")
        return
    client = ml_client(args.subscription, args.resource_group, args.workspace, registry=args.registry)
    for c in components:
        print(f"registered {register_one(client, c)}{where}")


def register_one(client, component) -> str:
    """Create `name:version`, or leave an identical one as it is; UserError when the workspace holds other content."""
    from azure.core.exceptions import HttpResponseError

    try:
        registered = client.components.create_or_update(component)
    except HttpResponseError as exc:
        if exc.status_code not in (400, 409):
            raise
        # A registered version is unchangeable: a changed spec at the same version is refused.
        reason = (str(exc.message or exc).strip().splitlines() or [""])[0]
        where = "the registry" if getattr(client, "_operation_scope", None) and client._operation_scope.registry_name \
            else "the workspace"
        raise UserError(f"{where} refused {component.name}:{component.version} ({exc.status_code}: {reason}); "
                        "if that version is already registered with other content, raise __version__ in "
                        "src/designer_resnet/__init__.py, run `make specs` and register again") from None
    return f"{registered.name}:{registered.version}"
