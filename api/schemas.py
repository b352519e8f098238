"""Request and response models: they validate input and generate the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.params import SynthesisParams


class TtsRequest(SynthesisParams):
    """A synthesis request: `/tts_stream`, `/tts` and `/jobs` all take it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Text to synthesize", "language": "en", "speaker_id": "Claribel Dervla"}]},
    )

    text: str = Field(..., description="Text to speak; long texts are split into chunks at sentence boundaries.")
    language: str = Field(..., description="Language code, one of GET /languages (e.g. en, de, zh-cn).")
    speaker_id: str = Field(
        ..., min_length=1, max_length=200,
        description="A saved voice id (see /saved_voices) or a built-in speaker name (see /available_speakers).",
    )

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

    def synthesis_params(self) -> dict[str, Any]:
        return SynthesisParams.model_validate(self.model_dump(include=set(SynthesisParams.model_fields))).model_dump()


class JobPath(BaseModel):
    job_id: str = Field(..., max_length=64, description="Job id (also the session id).")


class SessionPath(BaseModel):
    session_id: str = Field(..., max_length=64, description="Session id (the X-Session-Id header of /tts_stream).")


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(
        None, description="Resume after this event id ('<segment>-<seq>'); the Last-Event-ID header works too."
    )


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class JobCreated(BaseModel):
    id: str
    state: str
    status_url: str
    stream_url: str
    audio_url: str


class Progress(BaseModel):
    segments_done: int
    segments_total: int
    chunks: int
    audio_seconds: float
    audio_samples: int


class Timestamps(BaseModel):
    queued: str | None
    started: str | None
    first_chunk: str | None
    finished: str | None


class SpeakerRef(BaseModel):
    kind: str
    id: str


class JobStatus(BaseModel):
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


class LanguagesResponse(BaseModel):
    languages: list[str]
    source: str = Field(..., description="'workers' (what the live workers' model speaks) or 'xtts_v2' (no worker up)")


class SpeakersResponse(BaseModel):
    speakers: list[str]


class HealthResponse(BaseModel):
    status: str
    api: str
    redis: dict[str, Any]
    database: dict[str, Any]
    workers: list[dict[str, Any]]
