"""Turning a validated request into a job: limits, language and speaker checks, splitting, dispatch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery

from api.admission import admit, check_request_size
from api.schemas import TtsRequest
from shared import jobs, logs, registry, streams
from shared.db import session_scope
from shared.dispatch import dispatch
from shared.errors import (
    BrokerUnavailable,
    NothingToSpeak,
    NoWorkers,
    TextTooLong,
    UnknownLanguage,
    UnknownSpeaker,
)
from shared.languages import XTTS_V2_LANGUAGES
from shared.models import Job
from shared.params import SynthesisParams
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.text import split_text
from voices_store import store
from voices_store.ids import is_voice_id, voice_key
from voices_store.latents import parse_latents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveWorkers:
    """What the live workers offer, read once per request from the registry."""

    workers: list[dict[str, Any]]

    @classmethod
    def now(cls) -> LiveWorkers:
        return cls(registry.live_workers(get_redis()))

    @property
    def catalog(self) -> tuple[list[str], list[str]] | None:
        return registry.catalog_of(self.workers)

    @property
    def languages(self) -> tuple[list[str], str]:
        """The live workers' languages, or XTTS-v2's when no worker is up yet."""
        catalog = self.catalog
        return (catalog[0], "workers") if catalog and catalog[0] else (list(XTTS_V2_LANGUAGES), "xtts_v2")

    @property
    def model_name(self) -> str | None:
        """The model the live workers serve (the first by name if they disagree)."""
        names = sorted(name for w in self.workers if (name := (w.get("model") or {}).get("name")))
        return str(names[0]) if names else None

    @property
    def gpt_width(self) -> int | None:
        """GPT latent width of the live workers' model (None when no worker is up, or they disagree)."""
        widths = {w.get("gpt_width") for w in self.workers if w.get("gpt_width")}
        return widths.pop() if len(widths) == 1 else None


def check_language(farm: LiveWorkers, language: str) -> None:
    languages, _ = farm.languages
    if language not in languages:
        raise UnknownLanguage(
            f"language {language!r} is not supported; use one of: {', '.join(languages)}",
            details={"supported": languages},
        )


@dataclass(frozen=True)
class Speaker:
    kind: str  # saved, builtin, inline
    ref: str
    inline_voice: bytes | None = None


def resolve_speaker(farm: LiveWorkers, request: TtsRequest, tenant: str) -> Speaker:
    """A saved voice of the tenant (checked in SQL), a built-in speaker of the live workers' model (shared by every
    tenant), or inline latents. Another tenant's voice is unknown here, like any voice that does not exist."""
    if request.speaker_latents is not None:
        latents = parse_latents(
            request.speaker_latents.gpt_cond_latent, request.speaker_latents.speaker_embedding, farm.gpt_width
        )
        return Speaker("inline", latents.digest(), latents.to_npz())
    speaker_id = request.speaker_id or ""
    if is_voice_id(speaker_id) and store.voice_exists(tenant, speaker_id):
        return Speaker("saved", voice_key(tenant, speaker_id))
    catalog = farm.catalog
    if catalog is None:
        raise NoWorkers(
            "no synthesis worker is running, so built-in speakers cannot be checked; start a worker and retry"
        )
    if speaker_id in catalog[1]:
        return Speaker("builtin", speaker_id)
    raise UnknownSpeaker(
        f"speaker {speaker_id!r} is neither a saved voice nor a built-in speaker (see GET /available_speakers)",
        details={"builtin_speakers": catalog[1]},
    )


def submit(celery: Celery, request: TtsRequest, origin: str, tenant: str) -> Job:
    settings = get_settings()
    if len(request.text) > settings.MAX_TEXT_CHARS:
        raise TextTooLong(
            f"text is {len(request.text)} characters long; the limit is MAX_TEXT_CHARS={settings.MAX_TEXT_CHARS}"
        )
    # Zero-width characters, punctuation or emoji alone would reach the workers as segments with nothing to say.
    if not any(ch.isalnum() for ch in request.text):
        raise NothingToSpeak(
            "text has nothing to speak: it holds no letter or digit, only punctuation, symbols, spaces or "
            "invisible characters"
        )
    farm = LiveWorkers.now()
    check_language(farm, request.language)
    speaker = resolve_speaker(farm, request, tenant)
    segments = split_text(request.text, request.language)
    params = request.synthesis_params()
    check_request_size(segments, SynthesisParams.model_validate(params))
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin=origin,
            tenant=tenant,
            text=request.text,
            language=request.language,
            speaker_kind=speaker.kind,
            speaker_ref=speaker.ref,
            params=params,
            segments=segments,
            epoch=streams.current_epoch(get_redis()),
            inline_voice=speaker.inline_voice,
        )
    logs.bind(job_id=job.id, tenant=tenant)  # every line of this request from here on names the job
    log.info(
        "job queued (%s): %d segments, %d characters, language %s",
        origin,
        len(segments),
        len(request.text),
        request.language,
    )
    admit(job.id, tenant)
    try:
        dispatch(celery, job.id, len(farm.workers))
    except Exception as exc:
        jobs.fail_segment(job.id, 0, f"could not enqueue the job: {exc}")
        raise BrokerUnavailable(f"could not enqueue the job ({type(exc).__name__}); the broker may be down") from exc
    return job
