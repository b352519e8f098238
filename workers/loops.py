"""What the worker's background threads (heartbeat, reaper) share: a round that fails is logged and tried again."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def quietly(action: Callable[[], None], what: str) -> None:
    """Run one round of a background loop; a database or Redis hiccup is logged, and the next round tries again."""
    try:
        action()
    except Exception:
        log.warning("%s failed; retrying at the next round", what, exc_info=True)
