"""Safe extraction of zip, tar (plain, gz, bz2, xz), and single-file gz/bz2 archives.

Every member is checked before anything is written: absolute paths, `..`
components, links and special files refuse the whole archive. Members are
then streamed out one by one by our own code (no `extractall`), so the
archive can never place a file outside the extraction folder.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from ..directories.image_directory import is_junk, safe_relative_path
from ..errors import UserError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".gz", ".bz2")
_COPY_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    """True when the file name ends in an archive suffix we extract."""
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def find_archive(path: Path) -> Path | None:
    """The archive to extract: `path` itself, or the one file a folder holds."""
    if path.is_file():
        return path if is_archive(path) else None
    entries = [p for p in path.iterdir() if not is_junk(p.name)]
    if len(entries) == 1 and is_archive(entries[0]):
        return entries[0]
    return None


def extract_archive(archive: Path, dest: Path, *, input_name: str = "input") -> None:
    """Extract `archive` into the existing folder `dest`, refusing unsafe members."""
    what = f"{input_name}: archive {archive.name}"
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, what)
        elif _is_tar(archive):
            _extract_tar(archive, dest, what)
        elif archive.name.lower().endswith((".gz", ".bz2")):
            _extract_single(archive, dest, what)
        else:
            raise UserError(f"{what} is not a zip, tar, gz or bz2 archive; repack it in one of those formats")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a disk problem, not a broken archive
        raise UserError(f"{what} is corrupt or truncated ({exc}); upload it again") from None


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (OSError, EOFError):
        return False


def _target(dest: Path, name: str, what: str) -> Path:
    rel = safe_relative_path(name, what=what)
    return dest.joinpath(*rel.parts)


def _extract_zip(archive: Path, dest: Path, what: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _target(dest, info.filename, what)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UserError(f"{what}: member {info.filename!r} is a symbolic link; links are refused, "
                                "archive the files themselves")
            if info.flag_bits & 0x1:
                raise UserError(f"{what}: member {info.filename!r} is encrypted; upload an unencrypted archive")
        for info in members:
            target = _target(dest, info.filename, what)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)


def _extract_tar(archive: Path, dest: Path, what: str) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for member in members:
            _target(dest, member.name, what)
            if member.issym() or member.islnk():
                raise UserError(f"{what}: member {member.name!r} is a link; links are refused, archive the files themselves")
            if not (member.isfile() or member.isdir()):
                raise UserError(f"{what}: member {member.name!r} is not a regular file or folder; "
                                "device files and pipes are refused")
        for member in members:
            target = _target(dest, member.name, what)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            assert src is not None  # regular files always have a stream
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)


def _extract_single(archive: Path, dest: Path, what: str) -> None:
    opener = gzip.open if archive.name.lower().endswith(".gz") else bz2.open
    stem = archive.name.rsplit(".", 1)[0] or "data"
    with opener(archive, "rb") as src, open(_target(dest, stem, what), "wb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)
