"""The voices a caller may name: the live workers' built-in speakers, aliases (OpenAI's voice names and the tenant's
own) and the tenant's saved voices. /v1/audio/voices (OpenAI's shape) and /v1/voices (ElevenLabs') list them."""

from __future__ import annotations

from dataclasses import dataclass

from api.submission import LiveWorkers
from shared import alias_store
from shared.voice_aliases import aliases_of
from voices_store import store

SAVED_VOICES_PAGE = 500


@dataclass(frozen=True)
class SavedVoice:
    id: str
    name: str
    description: str


@dataclass(frozen=True)
class VoiceCatalog:
    builtin: list[str]
    aliases: dict[str, str]  # alias -> the voice it stands for
    saved: list[SavedVoice]

    @classmethod
    def of(cls, tenant: str) -> VoiceCatalog:
        catalog = LiveWorkers.now().catalog
        speakers = catalog[1] if catalog else []
        aliases = aliases_of(speakers) | {row.name: row.voice for row in alias_store.all_of(tenant)}
        saved, page = [], 1
        while True:
            total, voices = store.list_voices(tenant, page, SAVED_VOICES_PAGE)
            saved += [SavedVoice(v.id, v.name or v.id, v.description or "") for v in voices]
            if not voices or page * SAVED_VOICES_PAGE >= total:
                break
            page += 1
        return cls(list(speakers), aliases, saved)
