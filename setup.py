"""Packaging beyond pyproject.toml: a built package carries the component sources, specs and pipelines.

They live at the repository root (components/, pipelines/, environments/), where `az ml`
and the README use them; a wheel copies them into designer_resnet/_assets/, where
designer_resnet.assets finds them when there is no checkout. An editable install reads
the checkout itself, so nothing is copied there.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
FOLDERS = ("components", "pipelines", "environments")  # as designer_resnet.assets.FOLDERS
SUFFIXES = {".yaml", ".yml"}


class BuildWithAssets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "designer_resnet" / "_assets"
        shutil.rmtree(target, ignore_errors=True)
        for folder in FOLDERS:
            for path in sorted((ROOT / folder).rglob("*")):
                if path.is_file() and path.suffix in SUFFIXES:
                    dest = target / path.relative_to(ROOT)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest)


setup(cmdclass={"build_py": BuildWithAssets})
