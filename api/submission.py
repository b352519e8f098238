"""Turning a validated request into a job: limits, language and speaker checks, splitting, dispatch."""

from __future__ import annotations

import logging

from celery import Celery

from api.schemas import TtsRequest
from shared import jobs, registry, streams
from shared.db import session_scope
from shared.errors import ServiceUnavailable, TextTooLong, UnknownLanguage, UnknownSpeaker
from shared.languages import XTTS_V2_LANGUAGES
from shared.models import Job
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.text import split_text

log = logging.getLogger(__name__)

SEGMENT_TASK = "xtts.synthesize_segment"


def supported_languages() -> tuple[list[str], str]:
    """The live workers' languages, or XTTS-v2's when no worker is up yet."""
    catalog = registry.model_catalog(get_redis())
    return (catalog[0], "workers") if catalog and catalog[0] else (list(XTTS_V2_LANGUAGES), "xtts_v2")


def check_language(language: str) -> None:
    languages, _ = supported_languages()
    if language not in languages:
        raise UnknownLanguage(f"language {language!r} is not supported; use one of: {', '.join(languages)}",
                              details={"supported": languages})


def resolve_speaker(speaker_id: str) -> tuple[str, str]:
    """(kind, reference) for a speaker id: a built-in speaker of the live workers' model."""
    catalog = registry.model_catalog(get_redis())
    if catalog is None:
        raise ServiceUnavailable(
            "no synthesis worker is running, so built-in speakers cannot be checked; start a worker and retry"
        )
    if speaker_id in catalog[1]:
        return "builtin", speaker_id
    raise UnknownSpeaker(
        f"speaker {speaker_id!r} is neither a saved voice nor a built-in speaker (see GET /available_speakers)",
        details={"builtin_speakers": catalog[1]},
    )


def submit(celery: Celery, request: TtsRequest, origin: str) -> Job:
    settings = get_settings()
    if len(request.text) > settings.MAX_TEXT_CHARS:
        raise TextTooLong(
            f"text is {len(request.text)} characters long; the limit is MAX_TEXT_CHARS={settings.MAX_TEXT_CHARS}"
        )
    check_language(request.language)
    kind, ref = resolve_speaker(request.speaker_id)
    segments = split_text(request.text, request.language)
    r = get_redis()
    with session_scope() as s:
        job = jobs.create_job(
            s, origin=origin, text=request.text, language=request.language, speaker_kind=kind, speaker_ref=ref,
            params=request.synthesis_params(), segments=segments, epoch=streams.current_epoch(r),
        )

    def send(job_id: str, index: int) -> None:
        celery.send_task(SEGMENT_TASK, args=[job_id, index])

    try:
        jobs.dispatch(job.id, jobs.inflight_window(r), send)
    except Exception as exc:
        jobs.fail_segment(job.id, 0, f"could not enqueue the job: {exc}")
        raise ServiceUnavailable(f"could not enqueue the job ({type(exc).__name__}); the broker may be down") from exc
    return job
