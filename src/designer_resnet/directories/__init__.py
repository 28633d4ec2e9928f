"""Readers and writers of the designer port types (see docs/formats.md)."""

from .meta import META_FILE, read_meta, write_meta
from .staging import StagedOutput

__all__ = ["META_FILE", "read_meta", "write_meta", "StagedOutput"]
