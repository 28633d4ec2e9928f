"""Safe extraction of zip, tar (plain, gz, bz2, xz), and single-file gz/bz2 archives.

Every member is checked before anything is written: absolute paths, `..`
components, links and special files refuse the whole archive (a leading `./`,
as `tar czf photos.tgz -C photos .` writes, is fine). Members are then
streamed out one by one by our own code (no `extractall`), so the archive can
never place a file outside the extraction folder.

Archive bombs are refused before the disk fills. What an archive may write is
bounded four ways, checked first on the sizes the archive declares (zip, tar)
and again on the bytes actually streamed out (headers can lie; gz and bz2
declare nothing trustworthy):

- in all, at most `max_bytes` (the component's `max_extracted_gb`, default 50 GiB);
- in all, at most `MAX_RATIO` (200) times the archive's own size, beyond a
  free allowance of `RATIO_FREE_BYTES` (64 MiB): photos barely compress, so only
  a bomb expands more (give a genuine one as an extracted folder instead);
- at most `MAX_IMAGE_BYTES` (1 GiB) for one image file;
- at most `MAX_MEMBERS` (1,000,000) members;
- (declared sizes only) no more than the free space of the extraction disk.

Zip members whose data overlap in the file (the trick of non-recursive zip
bombs, which Python's zipfile does not catch) are refused too.

What a reader then copies out of the extracted files (Convert, through an
ImageDirectory's `images.lst`, which may name one file many times) is held to
the same `max_bytes` and ratio limits: `check_copy_total`, before any copy.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from ..component_source import default
from ..directories.image_directory import is_image_name, is_junk, safe_relative_path
from ..errors import UserError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".gz", ".bz2")
_COPY_CHUNK = 1 << 20
GIB = 1 << 30
DEFAULT_MAX_EXTRACTED_GB = default("convert_to_image_directory", "max_extracted_gb")
MAX_RATIO = 200
RATIO_FREE_BYTES = 64 << 20
MAX_IMAGE_BYTES = GIB
MAX_MEMBERS = 1_000_000
NAME_MAX = 255  # bytes in one path component (Linux, Windows, macOS)
PATH_MAX = 4000  # bytes in a whole extracted path (Linux allows 4096)


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


def extract_archive(archive: Path, dest: Path, *, input_name: str = "input", max_bytes: int | None = None) -> None:
    """Extract `archive` into the existing folder `dest`, refusing unsafe members and archive bombs.

    `max_bytes` bounds the total written (default `DEFAULT_MAX_EXTRACTED_GB` GiB).
    """
    what = f"{input_name}: archive {archive.name}"
    budget = _Budget(archive, DEFAULT_MAX_EXTRACTED_GB * GIB if max_bytes is None else max_bytes, what)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, what, budget)
        elif _is_tar(archive):
            _extract_tar(archive, dest, what, budget)
        elif archive.name.lower().endswith((".gz", ".bz2")):
            _extract_single(archive, dest, what, budget)
        elif _starts_like_zip(archive):
            raise UserError(f"{what} is a damaged or truncated zip (the table of contents at its end is missing); "
                            "re-create the archive or upload it again")
        else:
            raise UserError(f"{what} is not a zip, tar, gz or bz2 archive; repack it in one of those formats")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a disk problem, not a broken archive
        raise UserError(f"{what} is corrupt or truncated ({exc}); re-create the archive or upload it again") from None


def check_copy_total(archive: Path, total: int, *, input_name: str = "input", max_bytes: int | None = None,
                     note: str = "") -> None:
    """Refuse copying `total` bytes of files extracted from `archive`: the archive limits bound copies too.

    An image list may name one small file many times; without this, a 1 MiB
    archive could make its reader write hundreds of times its size. `note`
    says more about the list (how often one file repeats).
    """
    budget = _Budget(archive, DEFAULT_MAX_EXTRACTED_GB * GIB if max_bytes is None else max_bytes,
                     f"{input_name}: archive {archive.name}", doing=f"lists files to copy{note}: {_size(total)},",
                     ratio="an expansion",
                     fix="list each image once, or if the data is genuine, give it as a folder instead")
    budget.check_total(total)


def _starts_like_zip(archive: Path) -> bool:
    with open(archive, "rb") as fp:
        return fp.read(4) == b"PK\x03\x04"


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (OSError, EOFError):
        return False


def _size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class _Budget:
    """The bytes an archive may still write; raises a UserError past any limit.

    `doing` says what writes them and `ratio` what the ratio limit bounds (an extraction's, unless told);
    `fix` is what to do past the ratio.
    """

    def __init__(self, archive: Path, max_bytes: int, what: str, doing: str = "extracts to",
                 ratio: str = "a compression ratio",
                 fix: str = "if it is genuine, extract it yourself and give the folder instead"):
        self.archive_size = archive.stat().st_size
        self.by_ratio = max(MAX_RATIO * self.archive_size, RATIO_FREE_BYTES)
        self.max_bytes = max_bytes
        self.what, self.doing, self.ratio, self.fix = what, doing, ratio, fix
        self.written = 0

    def check_total(self, total: int) -> None:
        if total > self.max_bytes:
            raise UserError(f"{self.what} {self.doing} more than {_size(self.max_bytes)}, the max_extracted_gb limit; "
                            "raise max_extracted_gb if the data really is that large")
        if total > self.by_ratio:
            raise UserError(f"{self.what} {self.doing} more than {_size(self.by_ratio)} from "
                            f"{_size(self.archive_size)}, {self.ratio} over {MAX_RATIO}x that photos never reach (an archive bomb?); {self.fix}")

    def check_disk(self, total: int, dest: Path) -> None:
        free = shutil.disk_usage(dest).free
        if total > free:
            raise UserError(f"{self.what} extracts to {_size(total)} but only {_size(free)} is free on this disk; "
                            "run on a compute with a larger disk")

    def check_member(self, name: str, size: int) -> None:
        if is_image_name(name) and size > MAX_IMAGE_BYTES:
            raise UserError(f"{self.what}: member {name!r} is over {_size(MAX_IMAGE_BYTES)}, the limit for one image; "
                            "remove it from the archive (no real image is that large)")

    def copy(self, src, target: Path, name: str) -> None:
        """Stream `src` into `target`, stopping before any limit is passed."""
        done = 0
        with open(target, "wb") as out:
            while chunk := src.read(_COPY_CHUNK):
                done += len(chunk)
                self.check_member(name, done)
                self.check_total(self.written + len(chunk))
                self.written += len(chunk)
                out.write(chunk)


def _check_count(count: int, what: str) -> None:
    if count > MAX_MEMBERS:
        raise UserError(f"{what} has more than {MAX_MEMBERS:,} members, the limit for one archive; "
                        "give the images as a folder instead")


def _relative(name: str, is_dir: bool, what: str) -> PurePosixPath | None:
    """The member's safe relative path; None for the archive's own root (`.`, `./`)."""
    if is_dir and not PurePosixPath(name.replace("\\", "/")).parts:
        return None
    rel = safe_relative_path(name, what=what)
    if not is_dir and not rel.parts:
        raise UserError(f"{what}: member {name!r} has no file name; re-create the archive")
    for part in rel.parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise UserError(f"{what}: member {name[:60]!r}... has a name too long ({len(part.encode('utf-8', 'surrogateescape'))} "
                            f"bytes, at most {NAME_MAX} per folder or file name); rename it and re-create the archive")
    if len(str(rel).encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise UserError(f"{what}: member {name[:60]!r}... has a path too long (at most {PATH_MAX} bytes); "
                        "shorten its folders and re-create the archive")
    return rel


def _plan(entries: list[tuple[str, bool]], dest: Path, what: str) -> list[Path | None]:
    """Targets for (name, is_dir) members; refuses a path that would be both a file and a folder."""
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    targets: list[Path | None] = []
    for name, is_dir in entries:
        rel = _relative(name, is_dir, what)
        if rel is None:
            targets.append(None)
            continue
        dirs.update(p for p in rel.parents if p.parts)
        (dirs if is_dir else files).add(rel)
        targets.append(dest.joinpath(*rel.parts))
    clash = files & dirs
    if clash:
        raise UserError(f"{what}: {str(min(clash))!r} is both a file and a folder in the archive; "
                        "rename one of them and re-create the archive")
    return targets


def _check_zip_overlap(archive: Path, members: list[zipfile.ZipInfo], what: str) -> None:
    """Refuse members whose local header and data overlap another's in the file."""
    spans = []
    with open(archive, "rb") as fp:
        for info in members:
            fp.seek(info.header_offset)
            head = fp.read(30)
            if len(head) < 30 or head[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"bad local header for {info.filename!r}")
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            spans.append((info.header_offset, info.header_offset + 30 + name_len + extra_len + info.compress_size,
                          info.filename))
    spans.sort()
    end, last = -1, ""
    for start, stop, name in spans:
        if start < end:
            raise UserError(f"{what}: members {last!r} and {name!r} overlap in the file, a trick of archive bombs; "
                            "re-create the archive with a standard zip tool")
        if stop > end:
            end, last = stop, name


def _extract_zip(archive: Path, dest: Path, what: str, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        _check_count(len(members), what)
        for info in members:
            _relative(info.filename, info.is_dir(), what)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UserError(f"{what}: member {info.filename!r} is a symbolic link; links are refused, "
                                "archive the files themselves")
            if info.flag_bits & 0x1:
                raise UserError(f"{what}: member {info.filename!r} is encrypted; upload an unencrypted archive")
        targets = _plan([(info.filename, info.is_dir()) for info in members], dest, what)
        _check_zip_overlap(archive, members, what)
        for info in members:
            budget.check_member(info.filename, info.file_size)
        _write_members([(info.filename, info.is_dir(), info.file_size, partial(zf.open, info)) for info in members],
                       targets, dest, budget)


def _extract_tar(archive: Path, dest: Path, what: str, budget: _Budget) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = []
        for member in tf:  # counted as read, so a million-member listing is never held
            members.append(member)
            _check_count(len(members), what)
            _relative(member.name, member.isdir(), what)
            if member.issym() or member.islnk():
                raise UserError(f"{what}: member {member.name!r} is a link; links are refused, archive the files themselves")
            if not (member.isfile() or member.isdir()):
                raise UserError(f"{what}: member {member.name!r} is not a regular file or folder; "
                                "device files and pipes are refused")
            budget.check_member(member.name, member.size)
        targets = _plan([(m.name, m.isdir()) for m in members], dest, what)
        _write_members([(m.name, m.isdir(), m.size, partial(tf.extractfile, m)) for m in members], targets, dest,
                       budget)


def _write_members(members: list[tuple[str, bool, int, Callable[[], IO[bytes]]]], targets: list[Path | None],
                   dest: Path, budget: _Budget) -> None:
    """Check the declared sizes as a whole, then stream each (name, is_dir, size, open) member to its target.

    `targets` is _plan's, in the same order; None skips the member. Every member
    is a regular file or a folder by now, so each file opens to a stream.
    """
    declared = sum(size for _, is_dir, size, _ in members if not is_dir)
    budget.check_total(declared)
    budget.check_disk(declared, dest)
    for (name, is_dir, _, open_member), target in zip(members, targets):
        if target is None:
            continue
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src:
            budget.copy(src, target, name)


def _extract_single(archive: Path, dest: Path, what: str, budget: _Budget) -> None:
    opener = gzip.open if archive.name.lower().endswith(".gz") else bz2.open
    stem = archive.name.rsplit(".", 1)[0] or "data"
    target = _plan([(stem, False)], dest, what)[0]
    assert target is not None
    with opener(archive, "rb") as src:
        budget.copy(src, target, stem)
