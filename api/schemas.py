"""Request and response models: they validate input and generate the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from flask_openapi3 import FileStorage
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from api.encoding import DESCRIPTIONS, MEDIA_TYPES, AudioFormat
from shared.models import Job, JobSegment, VoiceKind
from shared.params import SynthesisParams
from voices_store.ids import VOICE_ID_PATTERN, split_voice_key
from voices_store.latents import EMBEDDING_DIM, GPT_TOKENS, MAX_ABS_VALUE
from voices_store.store import VoiceInfo


def documented_as(schema: dict[str, Any] | Callable[[], dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` that documents a field as `schema`, keeping its description. For what the API checks
    itself, with its own error codes (the shapes of latents, voice ids, cursors), so that the OpenAPI document says
    what is accepted as precisely as JSON Schema can."""

    def replace(field: dict[str, Any]) -> None:
        description = field.get("description")
        field.clear()
        field.update(schema() if callable(schema) else schema)
        if description:
            field["description"] = description

    return replace


def _array(items: dict[str, Any], n: int | None = None, *, most: int | None = None) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": n or 1, "maxItems": n or most}


_VALUE = {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}
_ROW = _array(_VALUE, most=8192)  # one GPT latent: `width` numbers (1024 for XTTS-v2), the same in every row
GPT_LATENT_SCHEMA = {"anyOf": [_array(_ROW, GPT_TOKENS), _array(_array(_ROW, GPT_TOKENS), 1)]}
_EMBEDDING_SHAPES = tuple(
    tuple(EMBEDDING_DIM if d == 0 else 1 for d in s) for s in ((0,), (1, 0), (0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 0))
)


def _nested(shape: tuple[int, ...]) -> dict[str, Any]:
    return _array(_VALUE if len(shape) == 1 else _nested(shape[1:]), shape[0])


SPEAKER_EMBEDDING_SCHEMA = {"anyOf": [_nested(shape) for shape in _EMBEDDING_SHAPES]}
VOICE_ID_SCHEMA = {"type": "string", "pattern": VOICE_ID_PATTERN}


FORMATS_DESCRIPTION = (
    "Audio format of the response: "
    + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items())
    + (". A /jobs job's audio format is chosen when it is fetched (GET /jobs/{id}/audio?response_format=...).")
)


def audio_response(what: str) -> dict[str, Any]:
    """An OpenAPI response with one media type per audio format (`response_format` chooses which)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "description": f"{what}, in the requested response_format (24 kHz mono)",
        "content": {media_type.split(";")[0]: binary for media_type in MEDIA_TYPES.values()},
    }


class InlineLatents(BaseModel):
    """Conditioning latents as /clone_speaker returns them (squeezed or not)."""

    gpt_cond_latent: list[Any] = Field(
        ...,
        description="[32, width] or [1, 32, width] (width 1024 for XTTS-v2, every row as wide)",
        json_schema_extra=documented_as(GPT_LATENT_SCHEMA),
    )
    speaker_embedding: list[Any] = Field(
        ..., description="[512] or [1, 512, 1]", json_schema_extra=documented_as(SPEAKER_EMBEDDING_SCHEMA)
    )


# coqui's official XTTS streaming server takes `stream_chunk_size` as a string ("20"): the strings of 1..400.
CHUNK_SIZE_STRING = r"^(?:[1-9][0-9]?|[1-3][0-9]{2}|400)$"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


OFFICIAL_LATENTS = ("gpt_cond_latent", "speaker_embedding")


class OfficialServerShape(BaseModel):
    """The request shape of coqui's official XTTS streaming server (coqui-ai/xtts-streaming-server), accepted beside
    the farm's own so that its clients work unchanged: the latents at the top level of the body, `stream_chunk_size`
    as a string, `add_wav_header`, and whatever the farm's /clone_speaker answered echoed back (its test client sends
    the clone response itself, plus text and language). The latents are copied into `speaker_latents` before
    validation, so everything after it (and the other endpoints) sees the farm's own shape."""

    model_config = ConfigDict(extra="forbid")

    gpt_cond_latent: list[Any] | None = Field(
        None,
        description="The official server's shape: instead of speaker_latents, the latents at the top level "
        "([32, width]), with speaker_embedding.",
        json_schema_extra=documented_as(_nullable(GPT_LATENT_SCHEMA)),
    )
    speaker_embedding: list[Any] | None = Field(
        None,
        description="The official server's shape: with gpt_cond_latent, at the top level ([512]).",
        json_schema_extra=documented_as(_nullable(SPEAKER_EMBEDDING_SCHEMA)),
    )
    add_wav_header: bool = Field(
        True,
        strict=True,
        description="As the official server: false answers raw 16-bit little-endian PCM (24 kHz mono), no WAV header.",
    )
    # Echoed from /clone_speaker's answer by the official clients; accepted and ignored.
    content_hash: str | None = Field(None, max_length=128, description="Accepted and ignored (from /clone_speaker).")
    reused: bool | None = Field(None, strict=True, description="Accepted and ignored (from /clone_speaker).")
    reference_seconds: float | None = Field(
        None, strict=True, description="Accepted and ignored (from /clone_speaker)."
    )

    @property
    def official_shape(self) -> bool:
        """Whether the latents came at the top level, as the official server takes them."""
        return self.gpt_cond_latent is not None

    @model_validator(mode="before")
    @classmethod
    def _latents_from_the_top_level(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = [name for name in OFFICIAL_LATENTS if data.get(name) is not None]
        if not given:
            return data
        if len(given) == 1:
            other = next(name for name in OFFICIAL_LATENTS if name not in given)
            raise ValueError(f"{other} is required with {given[0]} (the official server's shape)")
        if data.get("speaker_latents") is not None:
            raise ValueError("give the latents either at the top level or in speaker_latents, not both")
        if not all(isinstance(data[name], list) for name in OFFICIAL_LATENTS):
            return data  # the fields' own validation names the one that is not a list
        return {**data, "speaker_latents": {name: data[name] for name in OFFICIAL_LATENTS}}

    @field_validator("stream_chunk_size", mode="before", check_fields=False)
    @classmethod
    def _chunk_size_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not re.fullmatch(CHUNK_SIZE_STRING, value):
            raise ValueError('a whole number from 1 to 400, as a number or a string such as "20"')
        return int(value)


def _voice_choice(required: list[str], given: dict[str, Any]) -> dict[str, Any]:
    nulls = {name: {"type": "null"} for name in VOICE_FIELDS if name not in given}
    return {"required": required, "properties": {**given, **nulls}}


VOICE_FIELDS = ("speaker_id", "speaker_latents", "gpt_cond_latent", "speaker_embedding")


def _tts_request_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = [{"text": "Text to synthesize", "language": "en", "speaker_id": "Claribel Dervla"}]
    # Exactly one way to give the speaker, and not null (what `_one_voice` checks).
    schema["oneOf"] = [
        _voice_choice(["speaker_id"], {"speaker_id": {"type": "string"}}),
        _voice_choice(["speaker_latents"], {"speaker_latents": {"type": "object"}}),
        _voice_choice(
            ["gpt_cond_latent", "speaker_embedding"],
            {"gpt_cond_latent": {"type": "array"}, "speaker_embedding": {"type": "array"}},
        ),
    ]
    chunk = schema["properties"]["stream_chunk_size"]
    number = {k: v for k, v in chunk.items() if k not in ("description", "title")}
    chunk.clear()
    chunk.update(
        {
            "anyOf": [number, {"type": "string", "pattern": CHUNK_SIZE_STRING}],
            "description": "Audio tokens (about 46 ms each) in the first streamed audio chunk of each segment "
            '(default: the farm\'s DEFAULT_STREAM_CHUNK_SIZE, 20 unless configured); a string ("20") as the '
            "official server takes it works too.",
        }
    )


class TtsRequest(SynthesisParams, OfficialServerShape):
    """A synthesis request: `/tts_stream`, `/tts` and `/jobs` all take it, in the farm's shape (`speaker_id` or
    `speaker_latents`) or in the official XTTS server's (`gpt_cond_latent` and `speaker_embedding` at the top level)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_tts_request_schema)

    text: str = Field(
        ...,
        description="Text to speak, with at least one letter or digit; long texts are split into segments at "
        "sentence boundaries.",
        json_schema_extra=documented_as({"type": "string", "minLength": 1, "pattern": r"\S"}),
    )
    language: str = Field(..., description="Language code, one of GET /languages (e.g. en, de, zh-cn).")
    speaker_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A saved voice id (see /saved_voices) or a built-in speaker name (see /available_speakers).",
    )
    speaker_latents: InlineLatents | None = Field(
        None, description="Instead of speaker_id: conditioning latents as /clone_speaker returns them."
    )
    response_format: AudioFormat = Field("wav", description=FORMATS_DESCRIPTION)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value

    @field_validator("language")
    @classmethod
    def _language_normalized(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _one_voice(self) -> TtsRequest:
        if (self.speaker_id is None) == (self.speaker_latents is None):
            raise ValueError(
                "give exactly one of speaker_id (a saved voice or built-in speaker), speaker_latents, and "
                "gpt_cond_latent with speaker_embedding (the official server's shape)"
            )
        return self

    @model_validator(mode="after")
    def _no_header_is_pcm(self) -> TtsRequest:
        """The official server's `add_wav_header: false` is this farm's `response_format: pcm`."""
        if not self.add_wav_header:
            if self.response_format not in ("wav", "pcm"):
                raise ValueError(
                    f"add_wav_header: false asks for raw PCM; it cannot go with response_format {self.response_format}"
                )
            self.response_format = "pcm"
        return self

    def identity(self) -> str:
        """The request as JSON, without how its audio is delivered (what an Idempotency-Key stands for)."""
        # The official server's fields only restate the speaker (copied into speaker_latents) or say how to deliver.
        return self.model_dump_json(exclude={"response_format", *OfficialServerShape.model_fields})

    def synthesis_params(self) -> dict[str, Any]:
        return SynthesisParams.model_validate(self.model_dump(include=set(SynthesisParams.model_fields))).model_dump()


class JobPath(BaseModel):
    job_id: str = Field(
        ..., max_length=64, description="Job id (a streamed request's X-Session-Id header gives it too)."
    )


class StreamJobPath(BaseModel):
    session_id: str = Field(
        ..., max_length=64, description="The job's id, as the X-Session-Id header of /tts_stream gives it."
    )


class AudioQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_format: AudioFormat = Field("wav", description=FORMATS_DESCRIPTION)


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(
        None,
        description="Resume after this event id ('<segment>-<seq>'); the Last-Event-ID header works too.",
        json_schema_extra=documented_as({"type": "string", "pattern": r"^[0-9]{1,9}-[0-9]{1,9}$"}),
    )


class ErrorBody(BaseModel):
    status: int = Field(..., description="The HTTP status, repeated")
    code: str = Field(..., description="Stable machine-readable code (e.g. unknown_language, validation_error)")
    message: str = Field(..., description="What went wrong, for humans")
    details: Any | None = Field(None, description="Structured detail, when there is any (e.g. the supported values)")
    type: str | None = Field(
        None, description="On /v1/* only, for OpenAI's clients: invalid_request_error, authentication_error, ..."
    )
    param: str | None = Field(None, description="On /v1/* only: the request field at fault, when there is one")


class ErrorResponse(BaseModel):
    """The error contract of every endpoint (and of the `error` event of Server-Sent Events)."""

    error: ErrorBody


class JobCreated(BaseModel):
    id: str
    state: str
    status_url: str
    stream_url: str
    audio_url: str


class Progress(BaseModel):
    segments_done: int = Field(..., description="Segments (pieces of the text) fully synthesized")
    segments_total: int
    chunks: int = Field(..., description="Audio chunks published so far")
    audio_seconds: float
    audio_samples: int


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: the farm stores UTC, so say so (clients always get an offset)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Timestamps(BaseModel):
    queued: datetime | None
    started: datetime | None
    first_chunk: datetime | None = Field(..., description="When the first audio chunk was published")
    finished: datetime | None

    _as_utc = field_validator("queued", "started", "first_chunk", "finished")(_utc)


class SpeakerRef(BaseModel):
    kind: str = Field(..., description="builtin, saved or inline")
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
    started: datetime | None
    finished: datetime | None
    error: str | None
    characters: int

    _as_utc = field_validator("started", "finished")(_utc)

    @classmethod
    def from_segment(cls, segment: JobSegment, sample_rate: int) -> SegmentStatus:
        return cls(
            index=segment.index,
            state=segment.state,
            attempts=segment.attempts,
            worker=segment.worker,
            chunks=segment.chunks,
            audio_seconds=_seconds(segment.samples, sample_rate),
            started=segment.started_at,
            finished=segment.finished_at,
            error=segment.error,
            characters=len(segment.text),
        )


class JobStatus(BaseModel):
    """A job's public state (also what /stream_status answers)."""

    id: str
    session_id: str
    state: str = Field(..., description="queued, running, succeeded, failed or cancelled")
    origin: str
    language: str
    speaker: SpeakerRef
    progress: Progress
    timestamps: Timestamps
    error: str | None
    sample_rate: int
    segments: list[SegmentStatus] | None = Field(None, description="Per segment (GET /jobs/{id} only)")

    @classmethod
    def from_job(cls, job: Job, *, with_segments: bool = False) -> JobStatus:
        return cls(
            id=job.id,
            session_id=job.id,
            state=job.state,
            origin=job.origin,
            language=job.language,
            # A saved voice is named as its tenant knows it (the job holds its key, `tenant/id`).
            speaker=SpeakerRef(
                kind=job.voice_kind,
                id=split_voice_key(job.voice_ref)[1] if job.voice_kind == VoiceKind.SAVED else job.voice_ref,
            ),
            progress=Progress(
                segments_done=job.segments_done,
                segments_total=job.segments_total,
                chunks=job.chunks_done,
                audio_seconds=_seconds(job.audio_samples, job.sample_rate),
                audio_samples=job.audio_samples,
            ),
            timestamps=Timestamps(
                queued=job.created_at, started=job.started_at, first_chunk=job.first_chunk_at, finished=job.finished_at
            ),
            error=job.error,
            sample_rate=job.sample_rate,
            segments=[SegmentStatus.from_segment(seg, job.sample_rate) for seg in job.segments]
            if with_segments
            else None,
        )


class CacheCounters(BaseModel):
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    size: int = 0


class WorkerCacheStats(CacheCounters):
    model_config = ConfigDict(extra="allow")

    worker: str


class CacheTotals(CacheCounters):
    hit_rate: float | None = Field(..., description="hits / (hits + misses), null before any lookup")


class CacheStats(BaseModel):
    workers: list[WorkerCacheStats]
    total: CacheTotals


class CacheCleared(BaseModel):
    generation: int = Field(..., description="The cache generation every worker must reach")
    cleared: list[str] = Field(..., description="Workers that cleared their cache")
    pending: list[str] = Field(
        ..., description="Live workers that had not confirmed yet (they clear before their next lookup)"
    )


class LanguagesResponse(RootModel[list[str]]):
    """The language codes, a bare list as coqui's official XTTS server answers (its clients and demo read it so).
    The `X-Languages-Source` header says where the list comes from: `workers` (what the live workers' model speaks) or
    `xtts_v2` (XTTS-v2's list, while no worker is up)."""


class SpeakersResponse(BaseModel):
    speakers: list[str]


class StudioSpeaker(BaseModel):
    speaker_embedding: list[float] = Field(..., description="[512]")
    gpt_cond_latent: list[list[float]] = Field(..., description="[32, width] (width 1024 for XTTS-v2)")


class StudioSpeakers(RootModel[dict[str, StudioSpeaker]]):
    """Each built-in speaker's name and latents, in the official XTTS server's shape: send them back to /tts or
    /tts_stream at the top level of the body."""


class RequestSlots(BaseModel):
    """MAX_CONCURRENT_REQUESTS in the API process that answered."""

    limit: int
    in_use: int = Field(..., description="Synthesis responses being served")
    waiting: int = Field(..., description="Requests waiting for their turn")


class HealthResponse(BaseModel):
    status: str = Field(..., description="ok, no_workers or unavailable")
    api: str
    redis: dict[str, Any]
    database: dict[str, Any]
    live_workers: int = Field(..., description="Synthesis worker processes alive")
    workers: list[dict[str, Any]] | None = Field(
        None, description="Each live worker, its model and what it is doing (operators only: an admin key)"
    )
    requests: RequestSlots | None = Field(None, description="This API process's slots (operators only)")


class CloneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_format: Literal["json", "save"] = Field(
        "json", description="json: return the latents; save: store them as a voice under save_id"
    )
    save_id: str | None = Field(
        None,
        description="Voice id to save under (letters, digits, '-', '_')",
        json_schema_extra=documented_as({"anyOf": [VOICE_ID_SCHEMA, {"type": "null"}]}),
    )
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    overwrite: bool = Field(False, description="Replace an existing voice with the same id")

    @model_validator(mode="after")
    def _save_needs_id(self) -> CloneOptions:
        if self.response_format == "save" and not self.save_id:
            raise ValueError("save_id is required when response_format is 'save'")
        return self


class CloneForm(BaseModel):
    wav_file: list[FileStorage] = Field(
        ...,
        description="One or more reference recordings (WAV, MP3, FLAC, OGG/Opus, M4A), at most MAX_REFERENCE_PARTS",
        json_schema_extra=documented_as(
            {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
        ),
    )
    # flask-openapi3 decodes JSON form fields itself: a dict here, or the raw text if it was not JSON (which
    # `_options` in the route refuses). Documented as the JSON object it must be.
    options: dict[str, Any] | str | None = Field(
        None,
        description='JSON, e.g. {"response_format": "save", "save_id": "my-voice", "name": "My Voice"}',
        json_schema_extra=documented_as(CloneOptions.model_json_schema),
    )


class SaveVoiceBody(InlineLatents):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    overwrite: bool = False


class VoiceResponse(BaseModel):
    """A saved voice (its latents only with include_latents=true)."""

    id: str
    name: str
    description: str
    gpt_width: int = Field(..., description="Width of its GPT latents (1024 for XTTS-v2)")
    revision: str = Field(..., description="Changes on every write of the voice")
    source: str = Field(..., description="clone, latents or import")
    content_hash: str | None
    created_at: datetime
    updated_at: datetime

    _as_utc = field_validator("created_at", "updated_at")(_utc)

    @classmethod
    def from_info(cls, info: VoiceInfo) -> VoiceResponse:
        return cls(
            id=info.id,
            name=info.name,
            description=info.description,
            gpt_width=info.gpt_width,
            revision=info.revision,
            source=info.source,
            content_hash=info.content_hash,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class VoiceWithLatents(VoiceResponse):
    gpt_cond_latent: list[list[float]] = Field(..., description="[32, width]")
    speaker_embedding: list[float] = Field(..., description="[512]")


class SavedVoice(RootModel[VoiceWithLatents | VoiceResponse]):
    """A saved voice, with its latents when include_latents=true."""


class VoicePath(BaseModel):
    voice_id: str = Field(
        ..., description="Voice id (letters, digits, '-', '_')", json_schema_extra=documented_as(VOICE_ID_SCHEMA)
    )


class VoicesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bounded so that the SQL offset stays a 64-bit integer (a 38-digit page used to answer 500).
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(50, ge=1, le=500)


class VoiceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_latents: bool = False


class ClonedLatents(BaseModel):
    """/clone_speaker with response_format json: the latents, as the official XTTS server returns them."""

    gpt_cond_latent: list[list[float]] = Field(..., description="[32, width]")
    speaker_embedding: list[float] = Field(..., description="[512]")
    content_hash: str = Field(..., description="Identifies the decoded reference audio and the model")
    reused: bool = Field(..., description="True when a stored result for the same audio was reused")
    reference_seconds: float


class ClonedVoice(BaseModel):
    """/clone_speaker with response_format save: the saved voice."""

    voice: VoiceResponse
    content_hash: str
    reused: bool
    reference_seconds: float


class CloneResponse(RootModel[ClonedLatents | ClonedVoice]):
    """The latents (response_format json) or the saved voice (response_format save)."""


class DeletedVoice(BaseModel):
    deleted: str


class VoicesPage(BaseModel):
    voices: list[VoiceResponse]
    total: int
    page: int
    per_page: int


# OpenAI-compatible speech API (/v1/*): the shapes OpenAI's clients send and parse.

OPENAI_MODELS = ("xtts-v2", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class VoiceRef(BaseModel):
    """A custom voice as the `openai` client sends it: `{"id": "my-voice"}`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=200)


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech, as OpenAI's `client.audio.speech.create` sends it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "xtts-v2", "input": "Hello there.", "voice": "Claribel Dervla"}]},
    )

    model: Literal["xtts-v2", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"] = Field(
        ..., description="xtts-v2, or one of OpenAI's model ids (aliases: every one is XTTS-v2 here)"
    )
    input: str = Field(
        ...,
        description="The text to speak (at most MAX_TEXT_CHARS characters; long texts are split into segments).",
        json_schema_extra=documented_as({"type": "string", "minLength": 1, "pattern": r"\S"}),
    )
    voice: str | VoiceRef = Field(
        ...,
        description="A saved voice id of the caller's tenant, or a built-in speaker name (see GET /v1/audio/voices); "
        'also as {"id": ...}',
        json_schema_extra=documented_as(
            {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200}, VoiceRef.model_json_schema()]}
        ),
    )
    response_format: AudioFormat = Field("mp3", description="Audio format (default mp3, as OpenAI's)")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="Speaking rate; 1.0 is the model's own.")
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="audio: the encoded bytes, streamed as made; sse: Server-Sent Events `speech.audio.delta` "
        "(base64 audio in response_format) then `speech.audio.done`",
    )
    instructions: str | None = Field(
        None, max_length=4096, description="Accepted for compatibility and ignored: XTTS takes no style prompt."
    )
    language: str = Field("en", min_length=1, max_length=16, description="Extension: language code (default en).")
    min_new_tokens: int | None = Field(
        None, ge=1, le=605, description="Extension, advanced: lower bound on audio tokens per segment."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=605, description="Extension, advanced: upper bound on audio tokens per segment."
    )

    @field_validator("input")
    @classmethod
    def _input_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input is empty")
        return value

    @field_validator("voice")
    @classmethod
    def _voice_not_blank(cls, value: str | VoiceRef) -> str | VoiceRef:
        if isinstance(value, str) and not 1 <= len(value) <= 200:
            raise ValueError("voice must be 1 to 200 characters")
        return value

    def tts_request(self) -> TtsRequest:
        voice = self.voice.id if isinstance(self.voice, VoiceRef) else self.voice
        return TtsRequest(
            text=self.input,
            language=self.language,
            speaker_id=voice,
            speed=self.speed,
            response_format=self.response_format,
            min_new_tokens=self.min_new_tokens,
            max_new_tokens=self.max_new_tokens,
        )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(..., description="Unix time")
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str = Field(..., description="What `voice` takes")
    name: str
    type: Literal["builtin", "saved"]


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
