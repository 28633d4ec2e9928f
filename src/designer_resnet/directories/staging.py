"""Outputs are built in a hidden folder and moved into place only when complete.

Guarantees, for every port folder written through `StagedOutput`:

* One writer at a time: the output folder is locked (`flock` on the folder
  itself, so no lock file is ever published and a killed writer's lock goes
  with its process); a second writer gets one line naming the first's pid.
* `_meta.yaml` is moved in last, as the commit mark: a folder is complete
  exactly when it has a `_meta.yaml`. A run killed mid-publish leaves some
  entries, no `_meta.yaml`, and its staging folder (which still holds it).
* Work in progress lives in folders whose names start with `STAGING_PREFIX`
  (`.designer-resnet-staging-<pid>-…`, `.designer-resnet-scratch-<pid>-…`).
  Such a folder left inside an output folder means a run was killed there;
  readers should skip or refuse it, and the next writer of that folder
  deletes it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no locking, the rest still holds
    fcntl = None  # type: ignore[assignment]

from ..errors import UserError
from .meta import META_FILE

# Every folder a writer keeps inside an output folder while it works starts with this.
STAGING_PREFIX = ".designer-resnet-"
_MANIFEST = STAGING_PREFIX + "publishing"  # inside a staging folder: the names being moved out
_PID_NAME = re.compile(re.escape(STAGING_PREFIX) + r"(?:staging|scratch)-(\d+)-")


def is_staging_name(name: str) -> bool:
    """True for a writer's hidden work folder (live, or left by a killed run)."""
    return name.startswith(STAGING_PREFIX)


class StagedOutput:
    """Context manager: yields a staging folder inside `output_dir`.

    On success its contents are moved into `output_dir`, `_meta.yaml` last;
    on any exception the staging folder (and `output_dir`, if this created
    it) is removed, so a failed step leaves no half-written port. `scratch()`
    gives extra working folders that are always deleted, never published.
    While open, `output_dir` is locked against a second writer.
    """

    def __init__(self, output_dir: str | Path, *, output_name: str = "output"):
        self.output_dir = Path(output_dir)
        self.output_name = output_name
        self.path: Path | None = None
        self._created: list[Path] = []  # folders this made, deepest first
        self._scratch: list[Path] = []
        self._lock_fd: int | None = None

    # ---- entering: claim the folder, clear leftovers, make the staging folder

    def __enter__(self) -> "StagedOutput":
        out = self.output_dir
        if out.exists() and not out.is_dir():
            raise UserError(f"{self.output_name}: {out} exists and is not a folder; choose a folder path")
        try:
            self._claim()
            for stale in [p for p in out.iterdir() if is_staging_name(p.name)]:
                # left by a killed run (we hold the lock): never a finished output
                try:
                    _undo_publish(stale, out)
                    shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
                except OSError as exc:
                    raise UserError(f"{self.output_name}: cannot remove {stale}, left by an interrupted run "
                                    f"({exc.strerror}); delete it or choose another folder") from None
            if any(out.iterdir()):
                raise UserError(f"{self.output_name}: {out} is not empty; choose an empty or new folder")
            try:
                self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}staging-{os.getpid()}-", dir=out))
            except OSError as exc:
                raise UserError(f"{self.output_name}: cannot write in {out} ({exc.strerror}); "
                                "make the folder writable or choose another one") from None
        except BaseException:
            if self._lock_fd is not None or fcntl is None:  # never a folder another run holds
                self._remove_created()
            self._unlock()
            raise
        return self

    def _make_folder(self) -> None:
        out = self.output_dir
        if out.is_dir():
            return
        missing = [out, *[p for p in out.parents if not p.exists()]]
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.output_name}: cannot create {out} ({exc.strerror}); choose a writable path") from None
        self._created = [p for p in missing if p.is_dir()]

    def _claim(self) -> None:
        """Create the output folder if needed and lock it (non-blocking)."""
        out = self.output_dir
        for _ in range(5):
            self._make_folder()
            if fcntl is None:
                return
            try:
                fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                return  # cannot open a folder here: go on unlocked, later steps report what is wrong
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"{self.output_name}: {out} is being written by another run ({self._holder()}); "
                                "wait for it to finish, or stop it, or choose another folder") from None
            except OSError:
                os.close(fd)
                return  # a file system without locks: go on unlocked
            try:
                now = os.stat(out)
                held = os.fstat(fd)
                if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    self._lock_fd = fd
                    return
            except OSError:
                pass
            os.close(fd)  # the folder was removed (a failed writer cleaning up) between open and lock: again
        raise UserError(f"{self.output_name}: {out} keeps being removed by another run; choose another folder")

    def _holder(self) -> str:
        """`pid N` of the writer holding the lock, from its staging folder's name."""
        for _ in range(20):  # it makes its staging folder just after taking the lock
            pids = []
            try:
                for p in self.output_dir.iterdir():
                    m = _PID_NAME.match(p.name)
                    if m:
                        pids.append(int(m.group(1)))
            except OSError:
                break
            alive = [pid for pid in pids if _alive(pid)]
            if alive or pids:
                return f"pid {(alive or pids)[0]}"
            time.sleep(0.05)
        return "pid unknown"

    def scratch(self) -> Path:
        """A fresh working folder beside the staging folder, deleted on exit."""
        folder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}scratch-{os.getpid()}-", dir=self.output_dir))
        self._scratch.append(folder)
        return folder

    # ---- leaving: publish (meta last) or remove everything this made

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for folder in self._scratch:
                shutil.rmtree(folder, ignore_errors=True)
            assert self.path is not None
            if exc_type is None:
                self._publish()
                return
            shutil.rmtree(self.path, ignore_errors=True)
            self._remove_created()
        finally:
            self._unlock()

    def _publish(self) -> None:
        assert self.path is not None
        out = self.output_dir
        children = sorted((p for p in self.path.iterdir() if p.name != _MANIFEST),
                          key=lambda p: (p.name == META_FILE, p.name))
        moved: list[Path] = []
        try:
            # What is about to move, so that the next writer can take back a publish cut short by a kill.
            manifest = self.path / _MANIFEST
            manifest.write_text("".join(p.name + "\n" for p in children), encoding="utf-8")
            _fsync(manifest)
            for child in children:
                if child.name == META_FILE:
                    _fsync(child)  # its content, then every other entry's rename, before the commit mark
                    _fsync(out)
                target = out / child.name
                os.replace(child, target)
                moved.append(target)
            _fsync(out)
            manifest.unlink()
            self.path.rmdir()
        except BaseException as failure:
            # Take back what was moved (ours alone: the folder was empty and locked), meta first.
            for target in reversed(moved):
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() and not target.is_symlink() \
                    else target.unlink(missing_ok=True)
            shutil.rmtree(self.path, ignore_errors=True)
            self._remove_created()
            if isinstance(failure, OSError):
                raise UserError(f"{self.output_name}: cannot move the result into {out} ({failure.strerror}); "
                                "check the folder is writable and has free space, then run again") from None
            raise

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only ever removes an empty folder
            except OSError:
                break
        self._created = []

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


def _undo_publish(stale: Path, out: Path) -> None:
    """Remove from `out` what a killed run had already moved there from its staging folder `stale`."""
    try:
        names = (stale / _MANIFEST).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return  # killed before publishing: nothing of it is outside `stale`
    for name in names:
        if not name or "/" in name or name in (".", "..") or is_staging_name(name):
            continue
        if os.path.lexists(stale / name):
            continue  # not moved yet
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()


def _fsync(path: Path) -> None:
    """Flush a file's content or a folder's entries to disk, where the file system allows."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
