"""The single-server API's synthesis endpoints: POST /tts_stream (WAV streamed as it is produced) and POST /tts."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import redis
from celery import Celery
from flask import Response, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from api.auth import caller
from api.client import ClientConnection, ClientGone
from api.delivery import cancel, job_pcm
from api.encoding import MEDIA_TYPES, encode, encode_file
from api.errors import ClientLeft, ShuttingDown
from api.lifecycle import ServerLeaving
from api.limits import ConcurrencyLimit
from api.schemas.common import ErrorResponse, audio_response
from api.schemas.synthesis import TtsRequest
from api.submission import submit
from shared.errors import FarmError
from shared.models import Job

log = logging.getLogger(__name__)
bp = APIBlueprint("synthesis", __name__, abp_tags=[Tag(name="synthesis", description="Speech synthesis")])

STREAMED_AUDIO = audio_response("The audio, streamed as it is synthesized")
COMPLETE_AUDIO = audio_response("The complete audio file")
# /tts in the official XTTS server's shape (the latents at the top level) answers as that server does.
TTS_AUDIO = {
    "description": COMPLETE_AUDIO["description"] + ". A request in the official XTTS server's shape "
    "(`gpt_cond_latent` and `speaker_embedding` at the top level) gets the same audio base64-encoded, as a JSON "
    "string (application/json), as the official server answers",
    "content": {
        **COMPLETE_AUDIO["content"],
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


def _cancel_abandoned(job_id: str) -> None:
    if cancel(job_id):
        log.info("job %s cancelled: its client left before the audio was complete", job_id)


def stream_synthesis(
    body: TtsRequest,
    content_type: str,
    frame: Callable[[Iterator[bytes]], Iterator[bytes]] | None = None,
    produce: Callable[[Job, ClientConnection | None], Iterator[bytes]] | None = None,
) -> Response:
    """A streamed synthesis response: the request holds a slot while it is served, its audio is encoded in
    `body.response_format` as it arrives (and framed by `frame`, e.g. as Server-Sent Events; or the whole body made
    by `produce` from the job), and a client that leaves before the end cancels the job. /tts_stream,
    /v1/audio/speech and /v1/text-to-speech all answer with it."""
    slot = _limit().acquire()
    try:
        job = submit(_celery(), body, origin="stream", tenant=caller().tenant)
    except BaseException:
        slot.release()
        raise
    client = ClientConnection.of(request.environ)
    fmt = body.response_format
    finished = False

    def audio() -> Iterator[bytes]:
        nonlocal finished
        try:
            if produce is not None:
                yield from produce(job, client)
            else:
                encoded = encode(job_pcm(job.id, job.segments_total, client=client), fmt)
                yield from (frame(encoded) if frame is not None else encoded)
        except ClientGone:
            return
        except ServerLeaving:
            # This process is stopping, not the client leaving: the job runs on (its audio stays available
            # from /jobs/{id}/audio and /jobs/{id}/stream), so it is not cancelled.
            log.info("stream of job %s ended: the API process is shutting down", job.id)
        except (FarmError, redis.RedisError) as exc:
            log.info("stream of job %s ended early: %s", job.id, exc)
        finished = True

    response = Response(
        audio(),
        content_type=content_type,
        headers={"X-Session-Id": job.id, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    # close() runs however the response ends (sent, client gone, write failed, never iterated), unlike the body
    # generator's own `finally`.
    response.call_on_close(slot.release)
    response.call_on_close(lambda: None if finished else _cancel_abandoned(job.id))
    return response


@bp.post("/tts_stream", responses={200: STREAMED_AUDIO, **ERRORS})
def tts_stream(body: TtsRequest) -> Response:
    """Stream speech as it is synthesized, in `response_format` (default wav: the header at once, then the PCM as
    the workers produce it; compressed formats leave as soon as their encoder emits each packet). The official XTTS
    server's `add_wav_header: false` is the same as `response_format: pcm`.

    The job's id is in the `X-Session-Id` header: poll GET /stream_status/{id}, cancel with
    DELETE /stream_cancel/{id}. If synthesis fails mid-way, the stream simply ends; the status says why.
    A client that disconnects before the end cancels the job.
    """
    return stream_synthesis(body, MEDIA_TYPES[body.response_format])


@bp.post(
    "/tts",
    responses={
        200: TTS_AUDIO,
        409: ErrorResponse,
        # The client closed its connection while it waited (nginx's code): its job is cancelled, nobody reads this.
        499: ErrorResponse,
        502: ErrorResponse,
        **ERRORS,
    },
)
def tts(body: TtsRequest) -> Response:
    """Synthesize the whole text and answer with one complete file in `response_format` (default wav; 409 if the
    job is cancelled meanwhile, 502 if synthesis fails). A client that disconnects while it waits cancels the
    job.

    A request in the official XTTS server's shape (the latents at the top level) is answered as that server does:
    the audio base64-encoded, as a JSON string."""
    slot = _limit().acquire()
    try:
        job = submit(_celery(), body, origin="tts", tenant=caller().tenant)
        try:
            client = ClientConnection.of(request.environ)
            pcm = b"".join(job_pcm(job.id, job.segments_total, client=client))
        except ClientGone:
            _cancel_abandoned(job.id)
            raise ClientLeft(f"the client of job {job.id} closed its connection; the job is cancelled") from None
        except ServerLeaving:
            raise ShuttingDown(
                f"this API process is shutting down; job {job.id} runs on: fetch its audio from "
                f"/jobs/{job.id}/audio once it has succeeded"
            ) from None
    finally:
        slot.release()
    audio = encode_file(pcm, body.response_format)
    headers = {"X-Session-Id": job.id}
    if body.official_shape:  # its clients (the Gradio demo) base64-decode the body
        return Response(json.dumps(base64.b64encode(audio).decode()), mimetype="application/json", headers=headers)
    return Response(audio, content_type=MEDIA_TYPES[body.response_format], headers=headers)
