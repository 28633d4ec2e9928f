"""Where the generated component specs, the pipelines and the environment are.

(The component sources are package files, `designer_resnet/components/<name>.yaml`,
and travel with every copy of the package.) In a checkout (and an editable
install) these are the repository's own folders.
A built package carries a copy under `designer_resnet/_assets/` (setup.py puts
it there), so an installed `designer-resnet register` or `demo` finds the same
files with no checkout. Specs point at their code as `code: ../src`; `stage`
lays out a folder where that holds, with this package as the code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import UserError

PACKAGE = Path(__file__).resolve().parent
BUNDLED = PACKAGE / "_assets"
CHECKOUT = PACKAGE.parents[1]
# The folders a built package carries, relative to the repository root; setup.py copies these.
FOLDERS = ("components", "pipelines", "environments")
ASSET_SUFFIXES = (".yaml", ".yml")
COMPONENTS = "components"
TYPED = "components/typed"
PIPELINES = "pipelines"
CODE = "src"
# What a staged code snapshot leaves out (src/.amlignore says the same to Azure ML for a checkout).
_NOT_CODE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "_assets")


def root() -> Path:
    """The folder holding components/, pipelines/ and environments/: the bundled copy, else the checkout."""
    for candidate in (BUNDLED, CHECKOUT):
        if (candidate / TYPED).is_dir() and (candidate / PIPELINES).is_dir():
            return candidate
    raise UserError(f"the component specs are missing from this installation ({BUNDLED}); reinstall designer-resnet "
                    "with pip, or run from a checkout of its repository")


def stage(dest: Path) -> Path:
    """Copy the specs and pipelines into `dest`, with this package as `dest/src`, so `code: ../src` resolves.

    Returns `dest`. Used wherever specs must be loaded as Azure ML loads them
    (register, the demo), from a checkout and an installed package alike.
    """
    dest = Path(dest)
    source = root()
    for folder in FOLDERS:
        shutil.copytree(source / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    shutil.copytree(PACKAGE, dest / CODE / PACKAGE.name, ignore=_NOT_CODE)
    return dest
