"""The seed's synthesis endpoints: POST /tts_stream (WAV streamed as it is produced) and POST /tts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from celery import Celery
from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from api.delivery import job_audio, streaming_wav_header, wav_file
from api.limits import ConcurrencyLimit
from api.schemas import ErrorResponse, TtsRequest
from api.submission import submit
from shared.errors import FarmError

log = logging.getLogger(__name__)
bp = APIBlueprint("synthesis", __name__, abp_tags=[Tag(name="synthesis", description="Speech synthesis")])

WAV_RESPONSE = {
    "description": "audio/wav, 24 kHz mono 16-bit PCM",
    "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
}
ERRORS: dict[int | str, type[BaseModel] | dict[str, Any] | None] = {
    400: ErrorResponse,
    413: ErrorResponse,
    429: ErrorResponse,
    503: ErrorResponse,
}


def _limit() -> ConcurrencyLimit:
    limit: ConcurrencyLimit = current_app.extensions["xtts_limit"]
    return limit


def _celery() -> Celery:
    celery: Celery = current_app.extensions["celery"]
    return celery


@bp.post("/tts_stream", responses={200: WAV_RESPONSE, **ERRORS})
def tts_stream(body: TtsRequest) -> Response:
    """Stream speech as a WAV: the header at once, then audio as the workers produce it.

    The session id is in the `X-Session-Id` header: poll GET /stream_status/{id}, cancel with
    DELETE /stream_cancel/{id}. If synthesis fails mid-way, the stream simply ends; the status says why.
    """
    limit = _limit()
    limit.acquire()
    try:
        job = submit(_celery(), body, origin="stream")
    except BaseException:
        limit.release()
        raise

    def audio() -> Iterator[bytes]:
        yield streaming_wav_header()
        try:
            for _cursor, pcm in job_audio(job.id, job.segments_total):
                yield pcm
        except (FarmError, redis.RedisError) as exc:
            log.info("stream of session %s ended early: %s", job.id, exc)

    return Response(
        limit.hold_while(audio()),
        mimetype="audio/wav",
        headers={"X-Session-Id": job.id, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@bp.post("/tts", responses={200: WAV_RESPONSE, 409: ErrorResponse, 502: ErrorResponse, **ERRORS})
def tts(body: TtsRequest) -> Response:
    """Synthesize the whole text and answer with one complete WAV file (409 if the session is cancelled
    meanwhile, 502 if synthesis fails)."""
    limit = _limit()
    limit.acquire()
    try:
        job = submit(_celery(), body, origin="tts")
        pcm = b"".join(chunk for _cursor, chunk in job_audio(job.id, job.segments_total))
    finally:
        limit.release()
    return Response(wav_file(pcm), mimetype="audio/wav", headers={"X-Session-Id": job.id})
