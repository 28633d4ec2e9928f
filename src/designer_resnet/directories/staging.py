"""Outputs are built in a hidden folder and moved into place only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError

_PREFIX = ".designer-resnet-"


class StagedOutput:
    """Context manager: yields a staging folder inside `output_dir`.

    On success its contents are moved into `output_dir`; on any exception the
    staging folder (and `output_dir`, if this created it) is removed, so a
    failed step leaves no half-written port. `scratch()` gives extra working
    folders that are always deleted, never published.
    """

    def __init__(self, output_dir: str | Path, *, output_name: str = "output"):
        self.output_dir = Path(output_dir)
        self.output_name = output_name
        self.path: Path | None = None
        self._created: list[Path] = []  # folders this made, deepest first
        self._scratch: list[Path] = []

    def __enter__(self) -> "StagedOutput":
        out = self.output_dir
        if out.exists() and not out.is_dir():
            raise UserError(f"{self.output_name}: {out} exists and is not a folder; choose a folder path")
        if out.is_dir():
            leftovers = [p for p in out.iterdir() if not p.name.startswith(_PREFIX)]
            if leftovers:
                raise UserError(f"{self.output_name}: {out} is not empty; choose an empty or new folder")
            for stale in out.iterdir():  # left by a killed run; never a finished output
                shutil.rmtree(stale, ignore_errors=True)
        else:
            missing = [out, *[p for p in out.parents if not p.exists()]]
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise UserError(f"{self.output_name}: cannot create {out} ({exc.strerror}); choose a writable path") from None
            self._created = [p for p in missing if p.is_dir()]
        self.path = Path(tempfile.mkdtemp(prefix=_PREFIX + "staging-", dir=out))
        return self

    def scratch(self) -> Path:
        """A fresh working folder beside the staging folder, deleted on exit."""
        folder = Path(tempfile.mkdtemp(prefix=_PREFIX + "scratch-", dir=self.output_dir))
        self._scratch.append(folder)
        return folder

    def __exit__(self, exc_type, exc, tb) -> None:
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
        assert self.path is not None
        if exc_type is None:
            for child in sorted(self.path.iterdir()):
                os.replace(child, self.output_dir / child.name)
            self.path.rmdir()
            return
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in self._created:
            try:
                folder.rmdir()  # only ever removes an empty folder
            except OSError:
                break
