"""Saved voices and stored cloning results, in the SQL database every worker on every machine reads.

A voice is written in one transaction, so a half-written voice is never visible; each write gets a new
`revision`, which worker caches key on. Voices belong to a tenant: the API's functions take (tenant, voice id);
the workers name a voice by its key (`voices_store.ids.voice_key`), as the job that uses it does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from shared.db import rows_changed, session_scope
from shared.errors import NotFound
from shared.models import CloneResult, Voice, utcnow
from voices_store.errors import VoiceExists
from voices_store.ids import split_voice_key, validate_voice_id
from voices_store.latents import Latents, array_to_bytes


@dataclass(frozen=True)
class VoiceInfo:
    """A saved voice's description (its latents are read separately, only when needed)."""

    id: str
    name: str
    description: str
    gpt_width: int
    revision: str
    source: str
    content_hash: str | None
    created_at: datetime
    updated_at: datetime
    recipe: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> VoiceInfo:
        return cls(**row._mapping)


_INFO_COLUMNS = (
    Voice.id,
    Voice.name,
    Voice.description,
    Voice.gpt_width,
    Voice.revision,
    Voice.source,
    Voice.content_hash,
    Voice.created_at,
    Voice.updated_at,
    Voice.recipe,
)


def save_voice(
    tenant: str,
    voice_id: str,
    latents: Latents,
    *,
    name: str = "",
    description: str = "",
    overwrite: bool = False,
    source: str = "latents",
    content_hash: str | None = None,
    recipe: str | None = None,
) -> VoiceInfo:
    validate_voice_id(voice_id)
    now = utcnow()
    fields = {
        "name": name,
        "description": description,
        "gpt_cond_latent": array_to_bytes(latents.gpt_cond_latent),
        "speaker_embedding": array_to_bytes(latents.speaker_embedding),
        "gpt_width": latents.width,
        "revision": uuid.uuid4().hex,
        "source": source,
        "content_hash": content_hash,
        "recipe": recipe,
        "updated_at": now,
    }
    try:
        with session_scope() as s:
            existing = s.get(Voice, (tenant, voice_id))
            if existing is None:
                s.add(Voice(tenant=tenant, id=voice_id, created_at=now, **fields))
            elif overwrite:
                for key, value in fields.items():
                    setattr(existing, key, value)
            else:
                raise VoiceExists(f"voice {voice_id!r} already exists; send overwrite=true to replace it")
    except IntegrityError as exc:  # another request created it between our read and our insert
        raise VoiceExists(f"voice {voice_id!r} already exists; send overwrite=true to replace it") from exc
    return get_voice(tenant, voice_id)


def _is(tenant: str, voice_id: str) -> Any:
    return (Voice.tenant == tenant) & (Voice.id == voice_id)


def get_voice(tenant: str, voice_id: str) -> VoiceInfo:
    """The tenant's voice; NotFound as well when another tenant has one by that id (ids never leak across)."""
    validate_voice_id(voice_id)
    with session_scope() as s:
        row = s.execute(select(*_INFO_COLUMNS).where(_is(tenant, voice_id))).one_or_none()
    if row is None:
        raise NotFound(f"no saved voice {voice_id!r}")
    return VoiceInfo.from_row(row)


def voice_exists(tenant: str, voice_id: str) -> bool:
    with session_scope() as s:
        return s.execute(select(Voice.id).where(_is(tenant, voice_id))).first() is not None


def current_revision(key: str) -> str | None:
    """The revision now (None if deleted) of the voice a job names by its key: a worker checks it before every use
    of a cached copy."""
    with session_scope() as s:
        return s.execute(select(Voice.revision).where(_is(*split_voice_key(key)))).scalar_one_or_none()


def load_latents(key: str) -> Latents:
    """The latents of the voice named by its key (`voice_key(tenant, id)`)."""
    with session_scope() as s:
        row = s.execute(
            select(Voice.gpt_cond_latent, Voice.speaker_embedding).where(_is(*split_voice_key(key)))
        ).one_or_none()
    if row is None:
        raise NotFound(f"no saved voice {split_voice_key(key)[1]!r}")
    return Latents.from_npy(row.gpt_cond_latent, row.speaker_embedding)


def list_voices(tenant: str, page: int, per_page: int) -> tuple[int, list[VoiceInfo]]:
    with session_scope() as s:
        total = s.execute(select(func.count()).select_from(Voice).where(Voice.tenant == tenant)).scalar_one()
        rows = s.execute(
            select(*_INFO_COLUMNS)
            .where(Voice.tenant == tenant)
            .order_by(Voice.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
    return total, [VoiceInfo.from_row(row) for row in rows]


def delete_voice(tenant: str, voice_id: str) -> None:
    validate_voice_id(voice_id)
    with session_scope() as s:
        if not rows_changed(s, delete(Voice).where(_is(tenant, voice_id))):
            raise NotFound(f"no saved voice {voice_id!r}")


def get_clone_result(content_hash: str) -> Latents | None:
    with session_scope() as s:
        row = s.get(CloneResult, content_hash)
        return Latents.from_npy(row.gpt_cond_latent, row.speaker_embedding) if row else None


def put_clone_result(content_hash: str, model: str, latents: Latents, reference_seconds: float) -> None:
    try:
        with session_scope() as s:
            if s.get(CloneResult, content_hash) is None:
                s.add(
                    CloneResult(
                        content_hash=content_hash,
                        model=model,
                        gpt_cond_latent=array_to_bytes(latents.gpt_cond_latent),
                        speaker_embedding=array_to_bytes(latents.speaker_embedding),
                        gpt_width=latents.width,
                        reference_seconds=reference_seconds,
                        created_at=utcnow(),
                    )
                )
    except IntegrityError:
        pass  # the same audio was cloned twice at once: the first result stands
