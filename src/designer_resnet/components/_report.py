"""How entry modules tell the user what happened."""

from __future__ import annotations

import logging

log = logging.getLogger("designer_resnet")
_SHOWN = 10


def warn_skipped(skipped: list[tuple[object, str]], what: str) -> None:
    """One warning per skipped item (the first few), then the total."""
    for item, reason in skipped[:_SHOWN]:
        log.warning("skipped %s %s: %s", what, item, reason)
    if len(skipped) > _SHOWN:
        log.warning("... and %d more", len(skipped) - _SHOWN)
    if skipped:
        log.warning("skipped %d %s(s) in total", len(skipped), what)
