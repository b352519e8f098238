"""Jobs and the seed's sessions: their paths, queries, and the status a client polls."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.encoding import AudioFormat
from api.schemas.common import FORMATS_DESCRIPTION, NO_NUL, as_utc, documented_as, event_schema
from shared import blends
from shared.voice_kind import VoiceKind
from voices_store.ids import split_voice_key

if TYPE_CHECKING:
    from shared.models import Job, JobSegment


CURSOR_PATTERN = r"^[0-9]{1,9}-[0-9]{1,9}(-[0-9]{1,12})?$"
JOB_EVENT_SCHEMA = event_schema(
    {
        "audio": "one audio chunk, {segment, seq, samples, pcm_s16le_base64} (16-bit PCM), its id "
        "`<segment>-<seq>-<samples>` (where the chunk ends in its segment's audio)",
        "timestamps": "after a segment's last audio chunk: its timing, {segment, start_ms, end_ms (from the job's "
        "first sample), text (as said), chars, charStartTimesMs, charDurationsMs (from the segment's start), "
        "alignment_source}",
        "end": "the audio is complete, {state}",
        "error": "the stream broke off, {error: {status, code, message, details}} (the error contract's body)",
    },
    with_id=CURSOR_PATTERN,
)


class JobPath(BaseModel):
    job_id: str = Field(
        ...,
        max_length=64,
        pattern=NO_NUL,
        description="Job id (a streamed request's X-Session-Id header gives it too).",
    )


class StreamJobPath(BaseModel):
    session_id: str = Field(
        ...,
        max_length=64,
        pattern=NO_NUL,
        description="The job's id, as the X-Session-Id header of /tts_stream gives it.",
    )


class AudioQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_format: AudioFormat = Field("wav", description=FORMATS_DESCRIPTION)


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(
        None,
        description="Resume after this event id ('<segment>-<seq>-<samples>', or '<segment>-<seq>' of older "
        "streams); the Last-Event-ID header works too.",
        json_schema_extra=documented_as({"type": "string", "pattern": CURSOR_PATTERN}),
    )


class CaptionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["vtt", "srt"] = Field("vtt", description="vtt: WebVTT; srt: SubRip")
    granularity: Literal["sentence", "word"] = Field(
        "sentence",
        description="sentence: a cue per segment (exact: its own audio); word: a cue per word (its timing within "
        "the segment an estimate proportional to the text)",
    )


class JobCreated(BaseModel):
    id: str
    state: str
    priority: str = Field(..., description="live or bulk (see `priority` on the request)")
    status_url: str
    stream_url: str
    audio_url: str


class Progress(BaseModel):
    segments_done: int = Field(..., description="Segments (pieces of the text) fully synthesized")
    segments_total: int
    chunks: int = Field(..., description="Audio chunks published so far")
    audio_seconds: float
    audio_samples: int


class Timestamps(BaseModel):
    queued: datetime | None
    started: datetime | None
    first_chunk: datetime | None = Field(..., description="When the first audio chunk was published")
    finished: datetime | None

    _as_utc = field_validator("queued", "started", "first_chunk", "finished")(as_utc)


def public_voice(kind: VoiceKind, ref: str) -> str:
    """A voice as its tenant knows it: a saved voice by its id (a job holds its key, `tenant/id`), a blend as
    written (`voice:weight+...`)."""
    if kind is VoiceKind.SAVED:
        return split_voice_key(ref)[1]
    if kind is VoiceKind.BLEND:
        parts = blends.read_ref(ref)
        return blends.written([replace(p, voice=public_voice(p.kind or VoiceKind.BUILTIN, p.voice)) for p in parts])
    return ref


class SpeakerRef(BaseModel):
    kind: str = Field(..., description="builtin, saved, inline or blend")
    id: str


def _seconds(samples: int, sample_rate: int) -> float:
    return round(samples / sample_rate, 3)


class SegmentStatus(BaseModel):
    index: int
    state: str
    attempts: int
    worker: str | None
    chunks: int = Field(..., description="Audio chunks this segment published")
    audio_seconds: float
    audio_samples: int = Field(0, description="Its audio so far, in samples")
    started: datetime | None
    finished: datetime | None
    error: str | None
    characters: int
    language: str = Field(..., description="The language it is said in (the job's, or a span's own: SSML <lang>)")
    voice: str | None = Field(
        None, description="Its own voice (SSML <voice>, a built-in speaker or saved voice id); null: the job's"
    )
    speed: float | None = Field(None, description="Its own speed (SSML <prosody rate>); null: the job's")
    pause_ms: int = Field(0, description="A pause (no text): this many milliseconds of silence")

    _as_utc = field_validator("started", "finished")(as_utc)

    @classmethod
    def from_segment(cls, segment: JobSegment, job: Job) -> SegmentStatus:
        sample_rate = job.sample_rate
        voice = public_voice(VoiceKind(segment.voice_kind or ""), segment.voice_ref) if segment.voice_ref else None
        return cls(
            index=segment.index,
            state=segment.state,
            attempts=segment.attempts,
            worker=segment.worker,
            chunks=segment.chunks,
            audio_seconds=_seconds(segment.samples, sample_rate),
            audio_samples=segment.samples,
            started=segment.started_at,
            finished=segment.finished_at,
            error=segment.error,
            characters=len(segment.text),
            language=segment.language or job.language,
            voice=voice,
            speed=segment.speed,
            pause_ms=segment.pause_ms,
        )


class JobStatus(BaseModel):
    """A job's public state (also what /stream_status answers)."""

    id: str
    session_id: str
    state: str = Field(..., description="queued, running, succeeded, failed or cancelled")
    origin: str
    priority: str = Field(..., description="live or bulk (see `priority` on the synthesis requests)")
    language: str
    speaker: SpeakerRef
    progress: Progress
    text_open: bool = Field(
        False, description="Its text is still being written (a voice agent's context): more segments may come"
    )
    timestamps: Timestamps
    error: str | None
    sample_rate: int
    expected_start: datetime | None = Field(
        None,
        description="While a live job waits for its first audio: when it should start, from the workers' live "
        "capacity and the live work ahead of it (GET /jobs/{id} only)",
    )
    segments: list[SegmentStatus] | None = Field(None, description="Per segment (GET /jobs/{id} only)")

    _as_utc = field_validator("expected_start")(as_utc)

    @classmethod
    def from_job(cls, job: Job, *, with_segments: bool = False, expected_start: datetime | None = None) -> JobStatus:
        return cls(
            id=job.id,
            session_id=job.id,
            state=job.state,
            origin=job.origin,
            priority=job.priority,
            language=job.language,
            # A saved voice is named as its tenant knows it (the job holds its key, `tenant/id`).
            speaker=SpeakerRef(kind=job.voice_kind, id=public_voice(VoiceKind(job.voice_kind), job.voice_ref)),
            progress=Progress(
                segments_done=job.segments_done,
                segments_total=job.segments_total,
                chunks=job.chunks_done,
                audio_seconds=_seconds(job.audio_samples, job.sample_rate),
                audio_samples=job.audio_samples,
            ),
            text_open=job.text_open,
            timestamps=Timestamps(
                queued=job.created_at, started=job.started_at, first_chunk=job.first_chunk_at, finished=job.finished_at
            ),
            error=job.error,
            sample_rate=job.sample_rate,
            expected_start=expected_start,
            segments=[SegmentStatus.from_segment(seg, job) for seg in job.segments] if with_segments else None,
        )
