"""Turning a validated request into a job: limits, language and speaker checks, splitting, dispatch."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy.exc import IntegrityError

from api.admission import admit, admit_live, check_request_size
from api.errors import IdempotencyConflict
from api.schemas.synthesis import TtsRequest
from shared import jobs, logs, normalization, registry, streams
from shared.db import session_scope
from shared.dispatch import dispatch
from shared.errors import (
    NothingToSpeak,
    NoWorkers,
    TextTooLong,
    UnknownLanguage,
    UnknownVoice,
)
from shared.languages import XTTS_V2_LANGUAGES
from shared.models import Job
from shared.normalization import Normalized, NormalizeMode
from shared.params import SynthesisParams
from shared.priority import priority_for
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.text import split_text
from shared.voice_aliases import speaker_for_alias
from shared.voice_kind import VoiceKind
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


@dataclass(frozen=True)
class Spoken:
    """What a text will be said as: its segments, and what normalisation could not do as asked."""

    segments: list[str]
    warnings: list[str]


def spoken_segments(text: str, language: str, normalize: NormalizeMode) -> Spoken:
    """The segments a synthesis request with this text speaks (after normalisation unless it is `off`); refuses a
    text over MAX_TEXT_CHARS (413) and one with nothing to say (400)."""
    limit = get_settings().MAX_TEXT_CHARS
    if len(text) > limit:
        raise TextTooLong(f"text is {len(text)} characters long; the limit is MAX_TEXT_CHARS={limit}")
    # Zero-width characters, punctuation or emoji alone would reach the workers as segments with nothing to say.
    if not any(ch.isalnum() for ch in text):
        raise NothingToSpeak(
            "text has nothing to speak: it holds no letter or digit, only punctuation, symbols, spaces or "
            "invisible characters"
        )
    said = Normalized(text)
    if normalize == "auto":
        said = normalization.normalize(text, language, emoji=get_settings().NORMALIZE_EMOJI)
        if not any(ch.isalnum() for ch in said.text):
            raise NothingToSpeak(
                "text has nothing to speak once normalised (code blocks and emoji are not read aloud); "
                'send normalize: "off" to have it read as written'
            )
    return Spoken(split_text(said.text, language), said.warnings)


def check_language(farm: LiveWorkers, language: str) -> None:
    languages, _ = farm.languages
    if language not in languages:
        raise UnknownLanguage(
            f"language {language!r} is not supported; use one of: {', '.join(languages)}",
            details={"supported": languages},
        )


@dataclass(frozen=True)
class VoiceChoice:
    kind: VoiceKind
    ref: str
    inline_voice: bytes | None = None


def choose_voice(farm: LiveWorkers, request: TtsRequest, tenant: str) -> VoiceChoice:
    """A saved voice of the tenant (checked in SQL), a built-in speaker of the live workers' model (shared by every
    tenant) or the one an OpenAI voice name stands for, or inline latents. Another tenant's voice is unknown here,
    like any voice that does not exist."""
    if request.speaker_latents is not None:
        latents = parse_latents(
            request.speaker_latents.gpt_cond_latent, request.speaker_latents.speaker_embedding, farm.gpt_width
        )
        return VoiceChoice(VoiceKind.INLINE, latents.digest(), latents.to_npz())
    speaker_id = request.speaker_id or ""
    if is_voice_id(speaker_id) and store.voice_exists(tenant, speaker_id):
        return VoiceChoice(VoiceKind.SAVED, voice_key(tenant, speaker_id))
    catalog = farm.catalog
    if catalog is None:
        raise NoWorkers(
            "no synthesis worker is running, so built-in speakers cannot be checked; start a worker and retry"
        )
    if speaker_id in catalog[1]:
        return VoiceChoice(VoiceKind.BUILTIN, speaker_id)
    if (aliased := speaker_for_alias(speaker_id, catalog[1])) is not None:
        return VoiceChoice(VoiceKind.BUILTIN, aliased)  # OpenAI's voice names (shared/voice_aliases.py)
    raise UnknownVoice(
        f"speaker {speaker_id!r} is neither a saved voice, a built-in speaker (see GET /available_speakers) nor one "
        "of OpenAI's voice names",
        details={"builtin_speakers": catalog[1]},
    )


def request_digest(request: TtsRequest) -> str:
    return hashlib.sha256(request.identity().encode()).hexdigest()


def earlier_job(tenant: str, idempotency_key: str, request: TtsRequest) -> Job | None:
    """The job this tenant already made with this key (the same request), or None."""
    job = jobs.job_for_key(tenant, idempotency_key)
    if job is not None and job.request_digest != request_digest(request):
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was used for a different request (job {job.id}); "
            "use a new key for a new request"
        )
    return job


class _KeyTaken(Exception):
    """Another request with the same Idempotency-Key committed its job first."""


def submit_once(celery: Celery, request: TtsRequest, origin: str, tenant: str, key: str) -> tuple[Job, bool]:
    """`submit` under an Idempotency-Key: (the job, True) when this tenant already made one with the key for the
    same request (nothing is enqueued again), else (the new job, False)."""
    if (job := earlier_job(tenant, key, request)) is not None:
        logs.bind(job_id=job.id, tenant=tenant)
        return job, True
    try:
        return submit(celery, request, origin, tenant, idempotency_key=key), False
    except _KeyTaken:
        job = earlier_job(tenant, key, request)
        if job is None:  # the other request's job was refused by admission control and deleted: try ours
            return submit(celery, request, origin, tenant, idempotency_key=key), False
        return job, True


def submit(celery: Celery, request: TtsRequest, origin: str, tenant: str, idempotency_key: str | None = None) -> Job:
    """Validate, split, store and enqueue a synthesis request."""
    segments = spoken_segments(request.text, request.language, request.normalize).segments
    farm = LiveWorkers.now()
    check_language(farm, request.language)
    voice = choose_voice(farm, request, tenant)
    params = request.synthesis_params()
    check_request_size(segments, SynthesisParams.model_validate(params))
    try:
        with session_scope() as s:
            job = jobs.create_job(
                s,
                origin=origin,
                tenant=tenant,
                idempotency_key=idempotency_key,
                request_digest=request_digest(request) if idempotency_key else None,
                text=request.text,
                language=request.language,
                voice_kind=voice.kind,
                voice_ref=voice.ref,
                params=params,
                segments=segments,
                epoch=streams.current_epoch(get_redis()),
                inline_voice=voice.inline_voice,
                priority=priority_for(origin, request.priority),
                priority_stated=request.priority is not None,
            )
    except IntegrityError as exc:
        if idempotency_key is not None:
            raise _KeyTaken from exc  # two requests with the same key at once: the other one's job stands
        raise
    logs.bind(job_id=job.id, tenant=tenant)  # every line of this request from here on names the job
    log.info(
        "job queued (%s): %d segments, %d characters, language %s",
        origin,
        len(segments),
        len(request.text),
        request.language,
    )
    admit(job.id, tenant)
    admit_live(job, farm.workers)
    try:
        dispatch(celery, job.id, len(farm.workers), opening=True)
    except Exception:
        # The job is stored and its first segments are claimed: the reaper sends what the broker refused within
        # seconds (shared/dispatch.py), so the job stands and the client gets it.
        log.warning("could not enqueue job %s now; the reaper will send it", job.id, exc_info=True)
    return job
