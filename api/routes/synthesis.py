"""The seed's synthesis endpoints: POST /tts_stream (WAV streamed as it is produced) and POST /tts."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag

from api.delivery import job_audio, streaming_wav_header, wav_file
from api.schemas import ErrorResponse, TtsRequest
from api.submission import submit
from shared.errors import FarmError, JobConflict, SynthesisFailed
from shared.streams import StreamCancelled, StreamFailed

log = logging.getLogger(__name__)
bp = APIBlueprint("synthesis", __name__, abp_tags=[Tag(name="synthesis", description="Speech synthesis")])

WAV_RESPONSE = {"description": "audio/wav, 24 kHz mono 16-bit PCM", "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}
ERRORS = {400: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse}


def _limit():
    return current_app.extensions["xtts_limit"]


def _celery():
    return current_app.extensions["celery"]


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
        except (StreamFailed, StreamCancelled, FarmError, redis.RedisError) as exc:
            log.info("stream of session %s ended early: %s", job.id, exc)

    return Response(
        limit.hold_while(audio()), mimetype="audio/wav",
        headers={"X-Session-Id": job.id, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@bp.post("/tts", responses={200: WAV_RESPONSE, 409: ErrorResponse, 502: ErrorResponse, **ERRORS})
def tts(body: TtsRequest) -> Response:
    """Synthesize the whole text and answer with one complete WAV file."""
    limit = _limit()
    limit.acquire()
    try:
        job = submit(_celery(), body, origin="tts")
        try:
            pcm = b"".join(chunk for _cursor, chunk in job_audio(job.id, job.segments_total))
        except StreamCancelled as exc:
            raise JobConflict(f"session {job.id} was cancelled before it finished") from exc
        except StreamFailed as exc:
            raise SynthesisFailed(f"synthesis of session {job.id} failed: {exc}") from exc
    finally:
        limit.release()
    return Response(wav_file(pcm), mimetype="audio/wav", headers={"X-Session-Id": job.id})
