"""Turning a validated request into a job: limits, language and speaker checks, splitting, dispatch."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery
from sqlalchemy.exc import IntegrityError

from api import warnings_header
from api.admission import admit, admit_live, check_request_size
from api.errors import IdempotencyConflict
from api.schemas.common import TextSegment
from api.schemas.synthesis import TtsRequest
from shared import alias_store, blends, jobs, lexicon_store, logs, registry, ssml, streams
from shared.db import session_scope
from shared.dispatch import dispatch
from shared.errors import (
    InvalidInput,
    NothingToSpeak,
    NoWorkers,
    TextTooLong,
    UnknownLanguage,
    UnknownVoice,
)
from shared.languages import XTTS_V2_LANGUAGES
from shared.lexicons import Lexicon
from shared.models import Job
from shared.normalization import NormalizeMode
from shared.params import SPEED_RANGE, SynthesisParams
from shared.priority import Priority, priority_for
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.spoken import Spoken, segments_of
from shared.ssml import InputFormat
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


def spoken_segments(
    source: str | list[TextSegment],
    language: str,
    normalize: NormalizeMode,
    input_format: InputFormat | None = None,
    lexicons: list[Lexicon] | None = None,
) -> Spoken:
    """The segments a synthesis request with this text (or these segments) speaks: SSML (`input_format` ssml, or a
    text that starts with `<speak>`) or plain text with `[pause:...]` tags, normalised unless `normalize` is `off`,
    split. Refuses a text over MAX_TEXT_CHARS (413), malformed SSML (400 naming the line) and a text with nothing to
    say (400)."""
    text = source if isinstance(source, str) else "".join(item.text for item in source)
    limit = get_settings().MAX_TEXT_CHARS
    if len(text) > limit:
        raise TextTooLong(f"text is {len(text)} characters long; the limit is MAX_TEXT_CHARS={limit}")
    # Zero-width characters, punctuation or emoji alone would reach the workers as segments with nothing to say.
    if not any(ch.isalnum() for ch in text):
        raise NothingToSpeak(
            "text has nothing to speak: it holds no letter or digit, only punctuation, symbols, spaces or "
            "invisible characters"
        )
    if not isinstance(source, str):
        parsed = _listed_spans(source)
    elif input_format == "ssml" or (input_format is None and ssml.looks_like_ssml(source)):
        parsed = ssml.parse(source, language)
    else:
        parsed = ssml.plain_text_spans(source)
    used = lexicons or []
    spoken = segments_of(
        parsed.spans,
        language,
        normalize,
        get_settings().NORMALIZE_EMOJI,
        lambda lang: lexicon_store.COMPILED.respeller(used, lang).apply,
    )
    spoken.warnings[:0] = parsed.warnings
    if not spoken.texts:
        raise NothingToSpeak(
            "text has nothing to speak once normalised (markup, code blocks and emoji are not read aloud); "
            'send normalize: "off" to have plain text read as written'
        )
    return spoken


def _listed_spans(items: list[TextSegment]) -> ssml.Parsed:
    """A request's `segments` as spans: each piece's text (with its pause tags) in its voice and language; a line
    break after each, so that two pieces said alike are two sentences, not one word run into the next."""
    spans: list[ssml.Span] = []
    for item in items:
        voicing = ssml.Voicing(language=item.language, voice=item.voice)
        spans += [replace(span, voicing=voicing) for span in ssml.plain_text_spans(item.text + "\n").spans]
    ssml.check_pauses(spans)
    return ssml.Parsed(spans, [])


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
    return voice_by_name(farm, request.speaker_id or "", tenant)


def voice_by_name(farm: LiveWorkers, name: str, tenant: str, *, aliases: bool = True) -> VoiceChoice:
    """A voice a request names (speaker_id, SSML's <voice name>, a segment's voice), or a blend of several. With
    `aliases`, a name may be one of the tenant's aliases (whose voice is then found without them: no chains)."""
    if blends.is_blend(name):
        parts = []
        for part in blends.parse_blend(name):
            found = _one_voice(farm, part.voice, tenant, aliases)
            if found.kind is VoiceKind.BLEND:
                raise blends.InvalidBlend(f"{part.voice!r} is a blend itself: a blend mixes voices, not blends")
            parts.append(blends.BlendPart(found.ref, part.weight, found.kind))
        return VoiceChoice(VoiceKind.BLEND, blends.blend_ref(parts))
    return _one_voice(farm, name, tenant, aliases)


def _one_voice(farm: LiveWorkers, name: str, tenant: str, aliases: bool) -> VoiceChoice:
    if is_voice_id(name) and store.voice_exists(tenant, name):
        return VoiceChoice(VoiceKind.SAVED, voice_key(tenant, name))
    catalog = farm.catalog
    if catalog is None:
        raise NoWorkers(
            "no synthesis worker is running, so built-in speakers cannot be checked; start a worker and retry"
        )
    if name in catalog[1]:
        return VoiceChoice(VoiceKind.BUILTIN, name)
    # A voice is never hidden by an alias; the tenant's own aliases come before OpenAI's names.
    if aliases and (target := alias_store.target(tenant, name)) is not None:
        return voice_by_name(farm, target, tenant, aliases=False)
    if (aliased := speaker_for_alias(name, catalog[1])) is not None:
        return VoiceChoice(VoiceKind.BUILTIN, aliased)  # OpenAI's voice names (shared/voice_aliases.py)
    raise UnknownVoice(
        f"speaker {name!r} is neither a saved voice, a built-in speaker (see GET /available_speakers) nor one "
        "of OpenAI's voice names",
        details={"builtin_speakers": catalog[1]},
    )


def stored_segments(
    farm: LiveWorkers, spoken: Spoken, language: str, speed: float, tenant: str
) -> list[jobs.NewSegment]:
    """The segments as a job in `language` at `speed` stores them: each language checked, each voice found, each
    speed within bounds."""
    for said_in in sorted(spoken.languages() | {language}):
        check_language(farm, said_in)
    voices = {name: voice_by_name(farm, name, tenant) for name in sorted(spoken.voices())}
    stored = []
    for segment in spoken.segments:
        voice = voices.get(segment.voice) if segment.voice is not None and not segment.is_pause else None
        stored.append(
            jobs.NewSegment(
                segment.text,
                language=segment.language if segment.language != language else None,
                voice_kind=voice.kind if voice is not None else None,
                voice_ref=voice.ref if voice is not None else None,
                speed=_speed(speed, segment.speed),
                pause_ms=segment.pause_ms,
            )
        )
    return stored


def _speed(request_speed: float, factor: float | None) -> float | None:
    if factor is None:
        return None
    speed = round(request_speed * factor, 4)
    low, high = SPEED_RANGE
    if not low <= speed <= high:
        raise InvalidInput(
            f"a <prosody rate> makes a speed of {speed:g} with the request's speed {request_speed:g}; "
            f"speed is {low:g} to {high:g}"
        )
    return speed


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
    lexicons = lexicon_store.for_request(tenant, request.lexicons)
    spoken = spoken_segments(request.source, request.language, request.normalize, request.input_format, lexicons)
    warnings_header.note(spoken.warnings)
    farm = LiveWorkers.now()
    segments = stored_segments(farm, spoken, request.language, request.speed, tenant)
    voice = choose_voice(farm, request, tenant)
    params = request.synthesis_params()
    check_request_size(spoken.texts, SynthesisParams.model_validate(params), spoken.pause_ms)
    try:
        with session_scope() as s:
            job = jobs.create_job(
                s,
                origin=origin,
                tenant=tenant,
                idempotency_key=idempotency_key,
                request_digest=request_digest(request) if idempotency_key else None,
                text=request.written,
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
        len(request.written),
        request.language,
    )
    admit_and_send(celery, job, farm)
    return job


def admit_and_send(celery: Celery, job: Job, farm: LiveWorkers) -> None:
    """Admit a stored job (deleted and refused with a 429 past a limit) and send its first segments. A broker that
    refuses does not refuse the job: its first segments are claimed, and the reaper sends what the broker refused
    within seconds (shared/dispatch.py), so the job stands and the client gets it."""
    admit(job.id, job.tenant)
    admit_live(job, farm.workers)
    try:
        dispatch(celery, job.id, len(farm.workers), opening=True)
    except Exception:
        log.warning("could not enqueue job %s now; the reaper will send it", job.id, exc_info=True)


# --- texts written as they are spoken (a voice agent's context: api/agent_contexts.py) ----------------------------
def open_text(celery: Celery, voice_name: str, language: str, params: dict[str, Any], tenant: str) -> Job:
    """A live job with no text yet, taking segments as its text is written (`append_text`), until `jobs.close_text`.
    Checked and admitted as any synthesis request; nothing is dispatched until it has text."""
    farm = LiveWorkers.now()
    check_language(farm, language)
    voice = voice_by_name(farm, voice_name, tenant)
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="agent",
            tenant=tenant,
            text="",
            language=language,
            voice_kind=voice.kind,
            voice_ref=voice.ref,
            params=params,
            segments=[],
            epoch=streams.current_epoch(get_redis()),
            priority=Priority.LIVE,
            priority_stated=True,
            text_open=True,
        )
    logs.bind(job_id=job.id, tenant=tenant)
    admit(job.id, tenant)
    admit_live(job, farm.workers)
    return job


@dataclass(frozen=True)
class Appended:
    """A piece of text added to an open job: its segments' indexes, what each says, and how long each should be."""

    first: int
    said: list[str]
    expected_samples: list[int]


def append_text(celery: Celery, job: Job, text: str, normalize: NormalizeMode, lexicons: list[Lexicon]) -> Appended:
    """Split, store and dispatch a piece of an open job's text, said as the job says it (its voice, language and
    parameters). Raises as `spoken_segments` does, and `jobs.TextClosed` once the job takes no more text."""
    params = SynthesisParams.model_validate(job.params)
    spoken = spoken_segments(text, job.language, normalize, "text", lexicons)
    check_request_size(spoken.texts, params, spoken.pause_ms)
    farm = LiveWorkers.now()
    segments = stored_segments(farm, spoken, job.language, params.speed, job.tenant)
    first = jobs.append_segments(job.id, text, segments)
    try:
        dispatch(celery, job.id, len(farm.workers), opening=first == 0)
    except Exception:
        log.warning("could not enqueue text of job %s now; the reaper will send it", job.id, exc_info=True)
    expected = [params.expected_samples(seg.text, seg.pause_ms) for seg in spoken.segments]
    return Appended(first, [seg.text for seg in spoken.segments], expected)
