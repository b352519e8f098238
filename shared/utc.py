"""Times as the farm stores them: UTC. Imports nothing else of the farm (the API's request models use it)."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: the farm stores UTC, so say so."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
