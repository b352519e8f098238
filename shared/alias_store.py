"""A tenant's voice aliases in SQL (shared/models.py VoiceAlias)."""

from __future__ import annotations

import re

from sqlalchemy import delete, func, select

from shared.db import rows_changed, session_scope
from shared.errors import FarmError, InvalidInput, NotFound
from shared.models import VoiceAlias, utcnow
from shared.voice_aliases import ALIAS_NAME_PATTERN

MAX_ALIASES_PER_TENANT = 100
_ALIAS_NAME = re.compile(ALIAS_NAME_PATTERN)


class TooManyAliases(FarmError):
    status, code = 409, "too_many_aliases"


def check_name(name: str) -> str:
    if not _ALIAS_NAME.fullmatch(name):
        raise InvalidInput(f"alias {name[:80]!r}: 1 to 64 characters, none of + : | = / (they write blends and keys)")
    return name


def put(tenant: str, name: str, voice: str) -> tuple[VoiceAlias, bool]:
    now = utcnow()
    with session_scope() as s:
        row = s.get(VoiceAlias, (tenant, name))
        created = row is None
        if row is None:
            count = s.execute(select(func.count()).where(VoiceAlias.tenant == tenant)).scalar_one()
            if count >= MAX_ALIASES_PER_TENANT:
                raise TooManyAliases(
                    f"this tenant has {count} voice aliases, the most it may have; delete one first",
                    details={"limit": MAX_ALIASES_PER_TENANT},
                )
            row = VoiceAlias(tenant=tenant, name=name, created_at=now)
            s.add(row)
        row.voice = voice
        row.updated_at = now
        s.flush()
        s.expunge(row)
        return row, created


def target(tenant: str, name: str) -> str | None:
    """The voice the tenant's alias `name` stands for, or None."""
    with session_scope() as s:
        return s.execute(
            select(VoiceAlias.voice).where(VoiceAlias.tenant == tenant, VoiceAlias.name == name)
        ).scalar_one_or_none()


def all_of(tenant: str) -> list[VoiceAlias]:
    with session_scope() as s:
        rows = list(
            s.execute(select(VoiceAlias).where(VoiceAlias.tenant == tenant).order_by(VoiceAlias.name)).scalars()
        )
        for row in rows:
            s.expunge(row)
        return rows


def remove(tenant: str, name: str) -> None:
    with session_scope() as s:
        if not rows_changed(s, delete(VoiceAlias).where(VoiceAlias.tenant == tenant, VoiceAlias.name == name)):
            raise NotFound(f"no voice alias {name!r}")
