"""Request and response models: they validate input and generate the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from flask_openapi3 import FileStorage
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.params import SynthesisParams
from voices_store.store import VoiceInfo as VoiceResponse


class InlineLatents(BaseModel):
    """Conditioning latents as /clone_speaker returns them (squeezed or not)."""

    gpt_cond_latent: list[Any] = Field(..., description="[32, width] or [1, 32, width] (width 1024 for XTTS-v2)")
    speaker_embedding: list[Any] = Field(..., description="[512] or [1, 512, 1]")


class TtsRequest(SynthesisParams):
    """A synthesis request: `/tts_stream`, `/tts` and `/jobs` all take it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Text to synthesize", "language": "en", "speaker_id": "Claribel Dervla"}]},
    )

    text: str = Field(..., description="Text to speak; long texts are split into chunks at sentence boundaries.")
    language: str = Field(..., description="Language code, one of GET /languages (e.g. en, de, zh-cn).")
    speaker_id: str | None = Field(
        None, min_length=1, max_length=200,
        description="A saved voice id (see /saved_voices) or a built-in speaker name (see /available_speakers).",
    )
    speaker_latents: InlineLatents | None = Field(
        None, description="Instead of speaker_id: conditioning latents as /clone_speaker returns them."
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

    @model_validator(mode="after")
    def _one_speaker(self) -> TtsRequest:
        if (self.speaker_id is None) == (self.speaker_latents is None):
            raise ValueError("give exactly one of speaker_id (a saved voice or built-in speaker) and speaker_latents")
        return self

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


class SegmentStatus(BaseModel):
    index: int
    state: str
    attempts: int
    worker: str | None
    chunks: int
    audio_seconds: float
    started: str | None
    finished: str | None
    error: str | None
    characters: int


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
    segments: list[SegmentStatus] | None = Field(None, description="Per text chunk (GET /jobs/{id} only)")


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


class CloneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_format: Literal["json", "save"] = Field(
        "json", description="json: return the latents; save: store them as a voice under save_id"
    )
    save_id: str | None = Field(None, description="Voice id to save under (letters, digits, '-', '_')")
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    overwrite: bool = Field(False, description="Replace an existing voice with the same id")

    @model_validator(mode="after")
    def _save_needs_id(self) -> CloneOptions:
        if self.response_format == "save" and not self.save_id:
            raise ValueError("save_id is required when response_format is 'save'")
        return self


class CloneForm(BaseModel):
    wav_file: list[FileStorage] = Field(..., description="One or more reference recordings (WAV, MP3, FLAC, OGG/Opus, M4A)")
    # flask-openapi3 decodes JSON form fields itself: a dict here, or the raw text if it was not JSON.
    options: dict[str, Any] | str | None = Field(None, description='JSON, e.g. {"response_format": "save", "save_id": "my-voice", "name": "My Voice"}')


class SaveVoiceBody(InlineLatents):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    overwrite: bool = False


class VoicePath(BaseModel):
    voice_id: str = Field(..., description="Voice id (letters, digits, '-', '_')")


class VoicesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=500)


class VoiceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_latents: bool = False


class VoicesPage(BaseModel):
    voices: list[VoiceResponse]
    total: int
    page: int
    per_page: int
