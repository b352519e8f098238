"""The seed's synthesis endpoints: POST /tts_stream (WAV streamed as it is produced) and POST /tts."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import redis
from celery import Celery
from flask import Response, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from api.auth import caller
from api.client import ClientConnection, ClientGone
from api.delivery import cancel, job_audio, streaming_wav_header, wav_file
from api.errors import ClientLeft, ShuttingDown
from api.lifecycle import ServerLeaving
from api.limits import ConcurrencyLimit
from api.schemas import ErrorResponse, TtsRequest
from api.submission import submit
from shared.errors import FarmError

log = logging.getLogger(__name__)
bp = APIBlueprint("synthesis", __name__, abp_tags=[Tag(name="synthesis", description="Speech synthesis")])

PCM_MIMETYPE = "application/octet-stream"  # raw 16-bit little-endian PCM (audio/L16 would say big-endian)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
AUDIO_CONTENT = {"audio/wav": _BINARY, PCM_MIMETYPE: _BINARY}
WAV_RESPONSE = {
    "description": "audio/wav, 24 kHz mono 16-bit PCM; with `add_wav_header: false`, the same PCM without the WAV "
    "header (application/octet-stream), as coqui's official XTTS server sends it",
    "content": AUDIO_CONTENT,
}
TTS_RESPONSE = {
    "description": "The farm's own request shape: the WAV itself (audio/wav; application/octet-stream, raw PCM, with "
    "`add_wav_header: false`). The official XTTS server's shape (`gpt_cond_latent` and `speaker_embedding` at the top "
    "level): the same audio base64-encoded, as a JSON string (application/json), as the official server answers",
    "content": {
        **AUDIO_CONTENT,
        "application/json": {"schema": {"type": "string", "contentEncoding": "base64"}},
    },
}
ERRORS: dict[int | str, type[BaseModel] | dict[str, Any] | None] = {
    400: ErrorResponse,
    413: ErrorResponse,
    429: ErrorResponse,
}


def _limit() -> ConcurrencyLimit:
    limit: ConcurrencyLimit = current_app.extensions["xtts_limit"]
    return limit


def _celery() -> Celery:
    celery: Celery = current_app.extensions["celery"]
    return celery


def _audio_mimetype(body: TtsRequest) -> str:
    return "audio/wav" if body.add_wav_header else PCM_MIMETYPE


def _cancel_abandoned(job_id: str) -> None:
    if cancel(job_id):
        log.info("session %s cancelled: its client left before the audio was complete", job_id)


@bp.post("/tts_stream", responses={200: WAV_RESPONSE, **ERRORS})
def tts_stream(body: TtsRequest) -> Response:
    """Stream speech as a WAV: the header at once, then audio as the workers produce it (with
    `add_wav_header: false`, raw PCM without the header, as coqui's official XTTS server does).

    The session id is in the `X-Session-Id` header: poll GET /stream_status/{id}, cancel with
    DELETE /stream_cancel/{id}. If synthesis fails mid-way, the stream simply ends; the status says why.
    A client that disconnects before the end cancels the session.
    """
    slot = _limit().acquire()
    try:
        job = submit(_celery(), body, origin="stream", tenant=caller().tenant)
    except BaseException:
        slot.release()
        raise
    client = ClientConnection.of(request.environ)
    finished = False

    def audio() -> Iterator[bytes]:
        nonlocal finished
        if body.add_wav_header:
            yield streaming_wav_header()
        try:
            for _cursor, pcm in job_audio(job.id, job.segments_total, client=client):
                yield pcm
        except ClientGone:
            return
        except ServerLeaving:
            # This process is stopping, not the client leaving: the session runs on (its audio stays available
            # from /jobs/{id}/audio and /jobs/{id}/stream), so it is not cancelled.
            log.info("stream of session %s ended: the API process is shutting down", job.id)
        except (FarmError, redis.RedisError) as exc:
            log.info("stream of session %s ended early: %s", job.id, exc)
        finished = True

    response = Response(
        audio(),
        mimetype=_audio_mimetype(body),
        headers={"X-Session-Id": job.id, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    # close() runs however the response ends (sent, client gone, write failed, never iterated), unlike the body
    # generator's own `finally`.
    response.call_on_close(slot.release)
    response.call_on_close(lambda: None if finished else _cancel_abandoned(job.id))
    return response


@bp.post(
    "/tts",
    responses={
        200: TTS_RESPONSE,
        409: ErrorResponse,
        # The client closed its connection while it waited (nginx's code): its session is cancelled, nobody reads this.
        499: ErrorResponse,
        502: ErrorResponse,
        **ERRORS,
    },
)
def tts(body: TtsRequest) -> Response:
    """Synthesize the whole text and answer with one complete WAV file (409 if the session is cancelled
    meanwhile, 502 if synthesis fails). A client that disconnects while it waits cancels the session.

    A request in the official XTTS server's shape (the latents at the top level) is answered as that server does:
    the WAV base64-encoded, as a JSON string."""
    slot = _limit().acquire()
    try:
        job = submit(_celery(), body, origin="tts", tenant=caller().tenant)
        try:
            client = ClientConnection.of(request.environ)
            pcm = b"".join(chunk for _cursor, chunk in job_audio(job.id, job.segments_total, client=client))
        except ClientGone:
            _cancel_abandoned(job.id)
            raise ClientLeft(
                f"the client of session {job.id} closed its connection; the session is cancelled"
            ) from None
        except ServerLeaving:
            raise ShuttingDown(
                f"this API process is shutting down; session {job.id} runs on: fetch its audio from "
                f"/jobs/{job.id}/audio once it has succeeded"
            ) from None
    finally:
        slot.release()
    audio = wav_file(pcm) if body.add_wav_header else pcm
    headers = {"X-Session-Id": job.id}
    if body.official_shape:  # its clients (the Gradio demo) base64-decode the body
        return Response(json.dumps(base64.b64encode(audio).decode()), mimetype="application/json", headers=headers)
    return Response(audio, mimetype=_audio_mimetype(body), headers=headers)
