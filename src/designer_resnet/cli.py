"""The `designer-resnet` command: one subcommand per component, plus `demo`."""

from __future__ import annotations

import importlib
import sys

from . import __version__
from .components import COMPONENTS

EXTRA = {
    "run": ("designer_resnet.runner.command", "run a pipeline YAML locally (see designer-resnet run --help)"),
    "demo": ("designer_resnet.demo", "run the local demo on the built-in sample data"),
    "register": ("designer_resnet.register", "create or update every component in an Azure ML workspace"),
}


def _usage() -> str:
    lines = [f"designer-resnet {__version__}: Azure ML designer image-classification components, run locally",
             "", "usage: designer-resnet <command> [options]   (designer-resnet <command> --help for each)", "",
             "commands:"]
    for sub, module in COMPONENTS.items():
        doc = importlib.import_module(f"designer_resnet.components.{module}").__doc__.strip().splitlines()[0]
        lines.append(f"  {sub:<18}{doc}")
    for sub, (_, doc) in EXTRA.items():
        lines.append(f"  {sub:<18}{doc}")
    lines.append("\nadd --debug to any command to see a full traceback on errors")
    return "\n".join(lines)


def main(argv=None) -> int:
    from .errors import run_entry

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    sub, rest = argv[0], argv[1:]
    if sub in COMPONENTS:
        module = importlib.import_module(f"designer_resnet.components.{COMPONENTS[sub]}")
    elif sub in EXTRA:
        module = importlib.import_module(EXTRA[sub][0])
    else:
        print(f"error: unknown command {sub!r}; run 'designer-resnet --help' for the list", file=sys.stderr)
        return 1
    return run_entry(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
