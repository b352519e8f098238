"""Delivering a job's audio to HTTP clients: WAV framing, Server-Sent Events, and the waiting policy."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import wave
from collections.abc import Iterator
from typing import Any

from shared import jobs, streams
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH
from shared.errors import AudioExpired, FarmError, JobCancelled, SynthesisFailed
from shared.models import ACTIVE_STATES, Job, JobState
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.streams import Cursor

STREAMING_DATA_SIZE = 0xFFFFFFFF - 36  # "unknown length": players read until the connection ends


def streaming_wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte PCM WAV header for a stream whose length is not known yet."""
    byte_rate = sample_rate * SAMPLE_WIDTH
    return (
        b"RIFF"
        + struct.pack("<I", STREAMING_DATA_SIZE + 36)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, SAMPLE_WIDTH, 16)
        + b"data"
        + struct.pack("<I", STREAMING_DATA_SIZE)
    )


def wav_file(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


class Watchdog:
    """Runs whenever a reader waited a whole block with nothing new: raises once the job cannot progress."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.idle_timeout = get_settings().STREAM_IDLE_TIMEOUT_SECONDS
        self._chunks = -1
        self._since = time.monotonic()

    def __call__(self) -> None:
        job = current_job(self.job_id)
        if job.state == JobState.FAILED.value:
            raise SynthesisFailed(f"synthesis of job {job.id} failed: {job.error or 'unknown error'}")
        if job.state == JobState.CANCELLED.value:
            raise JobCancelled(f"job {job.id} was cancelled")
        if job.state == JobState.SUCCEEDED.value and not streams.all_segments_exist(
            get_redis(), job.id, job.segments_total
        ):
            # SQL records success just before the last end entry is written, so a finished job is only
            # a reason to stop waiting once its streams are gone.
            raise AudioExpired(audio_expired_message(self.job_id))
        if job.chunks_done != self._chunks:
            self._chunks, self._since = job.chunks_done, time.monotonic()
        elif time.monotonic() - self._since > self.idle_timeout:
            raise SynthesisFailed(
                f"no audio for {self.idle_timeout} s: job {job.id} is {job.state} and not progressing"
            )


def current_job(job_id: str, *, with_segments: bool = False) -> Job:
    """The job as SQL knows it, after declaring it lost (and stopping its workers) if Redis restarted
    without its data since the job was queued. Reads only, unless the job is found lost."""
    job = jobs.get_job(job_id, with_segments=with_segments)
    if job.state in ACTIVE_STATES:
        r = get_redis()
        epoch = streams.current_epoch(r)
        if job.redis_epoch != epoch and jobs.fail_if_lost(job_id, epoch):
            streams.publish_stop(r, job_id, get_settings().STREAM_TTL_SECONDS)
            job = jobs.get_job(job_id, with_segments=with_segments)
    return job


def audio_expired_message(job_id: str) -> str:
    ttl = get_settings().STREAM_TTL_SECONDS
    return (
        f"the audio of job {job_id} is no longer kept "
        f"(streams expire STREAM_TTL_SECONDS={ttl} s after their last chunk)"
    )


def job_audio(job_id: str, segments_total: int, cursor: Cursor | None = None) -> Iterator[tuple[Cursor, bytes]]:
    """A job's audio chunks after `cursor`, in order, waiting for workers as needed."""
    settings = get_settings()
    return streams.read_audio(
        get_redis(), job_id, segments_total, cursor, block_ms=settings.STREAM_READ_BLOCK_MS, on_idle=Watchdog(job_id)
    )


def sse_event(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


def sse_audio(cursor: Cursor, pcm: bytes) -> bytes:
    return sse_event(
        "audio",
        {
            "segment": cursor.segment,
            "seq": cursor.seq,
            "samples": len(pcm) // SAMPLE_WIDTH,
            "pcm_s16le_base64": base64.b64encode(pcm).decode(),
        },
        event_id=str(cursor),
    )


def sse_error(exc: FarmError) -> bytes:
    """The `error` event: the same body as an HTTP error response, `{"error": {status, code, message, details}}`."""
    return sse_event("error", {"error": exc.body()})
