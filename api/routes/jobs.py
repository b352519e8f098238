"""Jobs with polling and resumable pulls, and the status and cancel endpoints of the single-server XTTS API
(/stream_status, /stream_cancel), which take the X-Session-Id of a /tts_stream response, or any job id."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import redis
from flask import Response, current_app, request, url_for
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy.exc import OperationalError

from api import admission, captions
from api.answers import SharedAnswers
from api.auth import caller
from api.client import ClientConnection, ClientGone
from api.delivery import (
    audio_expired_message,
    cancel,
    check_cursor,
    current_job,
    job_chunks,
    job_pcm,
    sse_audio,
    sse_error,
)
from api.encoding import MEDIA_TYPES, encode_file
from api.framing import sse_event
from api.lifecycle import ServerLeaving
from api.responses import json_model
from api.schemas.common import ErrorResponse, audio_response
from api.schemas.jobs import (
    JOB_EVENT_SCHEMA,
    AudioQuery,
    CaptionsQuery,
    JobCreated,
    JobPath,
    JobStatus,
    StreamJobPath,
    StreamQuery,
)
from api.schemas.synthesis import TtsRequest
from api.submission import submit, submit_once
from shared import jobs, streams
from shared.alignment import Mark, segment_timing
from shared.errors import AudioExpired, FarmError, InvalidInput, JobNotReady, SynthesisFailed
from shared.models import JobState
from shared.redis_client import get_redis
from shared.streams import Cursor

log = logging.getLogger(__name__)
AUDIO_FILE = audio_response("The job's complete audio")
EVENT_STREAM = {
    "description": "Server-Sent Events: `audio` (id `<segment>-<seq>`), then `end` or `error`",
    "content": {"text/event-stream": {"schema": JOB_EVENT_SCHEMA}},
}
bp = APIBlueprint(
    "jobs",
    __name__,
    abp_tags=[Tag(name="jobs", description="Jobs, polling, and the status and cancel of streamed requests")],
)


# Printable ASCII, as in the IETF draft "The Idempotency-Key HTTP Header Field" (UUIDs fit easily).
IDEMPOTENCY_KEY = re.compile(r"\A[\x21-\x7e]{1,200}\Z")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.match(key):
        raise InvalidInput("the Idempotency-Key header must be 1 to 200 printable ASCII characters without spaces")
    return key


@bp.post(
    "/jobs",
    responses={202: JobCreated, 400: ErrorResponse, 409: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse},
)
def create_job(body: TtsRequest) -> Response:
    """Queue a synthesis job and return at once: poll its status, pull its stream, fetch its audio.

    With an `Idempotency-Key` header (1 to 200 printable characters, e.g. a UUID), sending the same request again
    with the same key returns the same job and enqueues nothing (`Idempotent-Replayed: true`); the key used for a
    different request is a 409."""
    key, celery, tenant = _idempotency_key(), current_app.extensions["celery"], caller().tenant
    job, replayed = (
        submit_once(celery, body, "job", tenant, key) if key else (submit(celery, body, "job", tenant), False)
    )
    created = JobCreated(
        id=job.id,
        state=job.state,
        priority=job.priority,
        status_url=url_for("jobs.job_status", job_id=job.id),
        stream_url=url_for("jobs.job_stream", job_id=job.id),
        # The job's audio URL keeps the format its request asked for (None: the default, wav, needs no parameter).
        audio_url=url_for("jobs.job_audio_file", job_id=job.id, response_format=_format_param(body.response_format)),
    )
    headers = {"Location": created.status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_model(created, 202, headers=headers)


def _format_param(fmt: str) -> str | None:
    return None if fmt == "wav" else fmt


@bp.get("/jobs/<job_id>", responses={200: JobStatus, 404: ErrorResponse})
def job_status(path: JobPath) -> Response:
    """State, progress (segments, audio chunks, seconds of audio), timestamps and error of a job, and of each
    of its segments (state, attempts, worker)."""
    job = current_job(path.job_id, tenant=caller().tenant, with_segments=True)
    return json_model(JobStatus.from_job(job, with_segments=True, expected_start=admission.expected_start(job)))


@bp.get(
    "/jobs/<job_id>/audio",
    responses={200: AUDIO_FILE, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 410: ErrorResponse},
)
def job_audio_file(path: JobPath, query: AudioQuery) -> Response:
    """The complete audio of a job that has succeeded, in `response_format` (default wav)."""
    job = current_job(path.job_id, tenant=caller().tenant)
    if job.state != JobState.SUCCEEDED.value:
        detail = f": {job.error}" if job.error else ""
        raise JobNotReady(
            f"job {job.id} is {job.state}{detail}; its audio exists once it has succeeded", details={"state": job.state}
        )
    if not streams.all_segments_exist(get_redis(), job.id, job.segments_total):
        raise AudioExpired(audio_expired_message(job.id))
    pcm = b"".join(job_pcm(job.id, job.segments_total))
    return Response(encode_file(pcm, query.response_format), content_type=MEDIA_TYPES[query.response_format])


@bp.get(
    "/jobs/<job_id>/stream",
    responses={200: EVENT_STREAM, 400: ErrorResponse, 404: ErrorResponse, 410: ErrorResponse, 429: ErrorResponse},
)
def job_stream(path: JobPath, query: StreamQuery) -> Response:
    """Pull a job's audio as Server-Sent Events, resumable from a cursor.

    Each `audio` event carries one audio chunk, 16-bit PCM (base64), and has an id `<segment>-<seq>`. A client
    that reconnects with `?cursor=<last id>` (or the `Last-Event-ID` header, as EventSource does) gets the
    rest with no gap and no duplicate. The stream ends with an `end` event, or an `error` event whose data
    is the error contract's body.
    """
    cursor = Cursor.parse(query.cursor or request.headers.get("Last-Event-ID"))
    job = current_job(path.job_id, tenant=caller().tenant)
    check_cursor(job, cursor)
    slot = current_app.extensions["xtts_limit"].acquire()
    client = ClientConnection.of(request.environ)
    if jobs.make_live(job.id):  # someone listens now: its next segments are live work
        log.info("job %s is live now: a reader attached to its stream", job.id)

    def events() -> Iterator[bytes]:
        try:
            for chunk in job_chunks(job.id, job.segments_total, cursor, client=client):
                yield sse_audio(chunk.cursor, chunk.pcm)
                if chunk.last and (timing := sse_timestamps(job.id, chunk.cursor.segment, job.sample_rate)):
                    yield timing
            yield sse_event({"state": _final_state(job.id)}, "end")
        except ClientGone:
            return  # a /jobs job runs on without its listener; it can reconnect with its last event id
        except ServerLeaving:
            return  # no `end` event: the listener reconnects with its last event id, to a process that stays
        except FarmError as exc:
            yield sse_error(exc)
        except redis.RedisError as exc:
            yield sse_error(SynthesisFailed(f"the audio stream broke off: Redis is not answering ({exc})"))

    response = Response(
        events(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Session-Id": job.id},
    )
    # close() runs however the response ends, HEAD included (which never iterates the body).
    response.call_on_close(slot.release)
    return response


# A complete segment's `timestamps` event, made once for all of this process's listeners of it (each would read the
# segment's whole stream again, its audio included, for the same answer), and kept TIMESTAMPS_KEPT_S.
TIMESTAMPS_KEPT_S = 30.0
_timestamps = SharedAnswers(lambda: TIMESTAMPS_KEPT_S, limit=4096)
# The job's state its listeners' `end` events report, asked once a second for all of them.
_final_states = SharedAnswers(lambda: 1.0, limit=4096)


def sse_timestamps(job_id: str, index: int, rate: int) -> bytes | None:
    """`segment_timestamps`, made once for all of this process's listeners of the segment (TIMESTAMPS_KEPT_S)."""
    event: bytes | None = _timestamps.answer((job_id, index), lambda: segment_timestamps(job_id, index, rate))
    return event


def segment_timestamps(job_id: str, index: int, rate: int) -> bytes | None:
    """The `timestamps` event of a segment whose audio is complete (None for a pause: nothing is said). Its length
    comes from its stream, which holds its last chunk before SQL counts it."""
    start = jobs.segment_start(job_id, index)
    if start is None or not start.text.strip():
        return None
    held = streams.delivered(get_redis(), streams.segment_key(job_id, index))
    samples = held.samples
    timing, source = segment_timing(start.text, samples, held.marks, rate)
    data = {
        "segment": index,
        "start_ms": round(start.start * 1000 / rate),
        "end_ms": round((start.start + samples) * 1000 / rate),
        "text": start.text,
        "chars": timing.chars,
        "charStartTimesMs": timing.starts_ms,
        "charDurationsMs": timing.durations_ms,
        "alignment_source": source,
    }
    return sse_event(data, "timestamps")


@bp.get(
    "/jobs/<job_id>/captions",
    responses={
        200: {
            "description": "The captions (WebVTT or SRT) of the segments whose audio is complete",
            "content": {
                "text/vtt": {"schema": {"type": "string"}},
                "application/x-subrip": {"schema": {"type": "string"}},
            },
        },
        404: ErrorResponse,
    },
)
def job_captions(path: JobPath, query: CaptionsQuery) -> Response:
    """Captions of a job's audio: a cue per segment (exact times, from the audio each segment made) or per word
    (`granularity=word`: within a segment, XTTS's attention's timing while the segment's audio is still held, else
    timing proportional to the text), as WebVTT (`format=vtt`) or SRT. A running job's captions cover the segments
    done so far."""
    job = current_job(path.job_id, tenant=caller().tenant, with_segments=True)
    r = get_redis()

    def marks(index: int) -> tuple[Mark, ...] | None:
        return streams.segment_marks(r, streams.segment_key(job.id, index)) if query.granularity == "word" else None

    text = captions.render(captions.cues(job, query.granularity, marks), query.format)
    return Response(text, content_type=captions.MEDIA_TYPES[query.format])


def _final_state(job_id: str) -> str:
    """The state the `end` event reports: the job has delivered all its audio, so it has succeeded, even when the
    database cannot say so right now."""
    try:
        state: str = _final_states.answer(job_id, lambda: jobs.get_job(job_id).state)
        return state
    except OperationalError:
        return JobState.SUCCEEDED.value


def _cancel(job_id: str) -> Response:
    job = current_job(job_id, tenant=caller().tenant)
    if cancel(job.id):
        log.info("job %s cancelled", job.id)
    return json_model(JobStatus.from_job(jobs.get_job(job.id)))


@bp.delete("/jobs/<job_id>", responses={200: JobStatus, 404: ErrorResponse})
def cancel_job(path: JobPath) -> Response:
    """Cancel a job: queued segments never start, running ones stop within one audio chunk."""
    return _cancel(path.job_id)


@bp.get("/stream_status/<session_id>", responses={200: JobStatus, 404: ErrorResponse})
def stream_status(path: StreamJobPath) -> Response:
    """A job's status, by the id a /tts_stream response gave in its X-Session-Id header (any job id works)."""
    return json_model(JobStatus.from_job(current_job(path.session_id, tenant=caller().tenant)))


@bp.delete("/stream_cancel/<session_id>", responses={200: JobStatus, 404: ErrorResponse})
def stream_cancel(path: StreamJobPath) -> Response:
    """Cancel a job, by the id a /tts_stream response gave in its X-Session-Id header (any job id works): a running
    synthesis stops within one audio chunk."""
    return _cancel(path.session_id)
