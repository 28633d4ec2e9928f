"""The package's layers (pyproject.toml's import-linter contract, docs/architecture.md) hold, and the check can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path, src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_every_module_imports_only_its_own_layer_or_below():
    result = _lint(REPO, REPO / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Each module on its own floor KEPT" in result.stdout


def test_an_import_up_a_layer_breaks_the_contract(tmp_path):
    """The contract is not vacuous: the models layer reaching into an entry module, inside a function, is caught."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "src" / "designer_resnet", tmp_path / "src" / "designer_resnet",
                    ignore=shutil.ignore_patterns("__pycache__", "_assets"))
    create = tmp_path / "src" / "designer_resnet" / "models" / "create.py"
    create.write_text(create.read_text() + "\n\ndef _upward():\n    from ..components import COMPONENTS\n\n"
                      "    return COMPONENTS\n")
    result = _lint(tmp_path, tmp_path / "src")
    assert result.returncode == 1
    assert "Each module on its own floor BROKEN" in result.stdout
    assert "designer_resnet.models.create -> designer_resnet.components" in result.stdout
