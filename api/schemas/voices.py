"""Voice cloning and saved voices."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from flask_openapi3 import FileStorage
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from api.schemas.common import NO_NUL, VOICE_ID_SCHEMA, InlineLatents, as_utc, documented_as
from shared.settings import get_settings
from shared.voice_aliases import ALIAS_NAME_PATTERN

if TYPE_CHECKING:
    from shared.models import VoiceAlias
    from voices_store.store import VoiceInfo


def _save_needs_id_schema(schema: dict[str, Any]) -> None:
    # What `_save_needs_id` checks: response_format json (or left out), or a save_id to save under.
    schema["anyOf"] = [
        {"properties": {"response_format": {"enum": ["json"]}}},
        {"required": ["save_id"], "properties": {"save_id": VOICE_ID_SCHEMA}},
    ]


class CloneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_save_needs_id_schema)

    response_format: Literal["json", "save"] = Field(
        "json", description="json: return the latents; save: store them as a voice under save_id"
    )
    save_id: str | None = Field(
        None,
        description="Voice id to save under (letters, digits, '-', '_')",
        json_schema_extra=documented_as({"anyOf": [VOICE_ID_SCHEMA, {"type": "null"}]}),
    )
    name: str = Field("", max_length=200, pattern=NO_NUL)
    description: str = Field("", max_length=2000, pattern=NO_NUL)
    overwrite: bool = Field(False, description="Replace an existing voice with the same id")

    @model_validator(mode="after")
    def _save_needs_id(self) -> CloneOptions:
        if self.response_format == "save" and not self.save_id:
            raise ValueError("save_id is required when response_format is 'save'")
        return self


def _reference_files_schema() -> dict[str, Any]:
    """1 to MAX_REFERENCE_PARTS files (read when the document is made, from the farm's settings; more is a 413)."""
    most = get_settings().MAX_REFERENCE_PARTS
    return {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": most}


class CloneForm(BaseModel):
    model_config = ConfigDict(extra="forbid")  # its fields are all there is: an unknown form field is refused

    wav_file: list[FileStorage] = Field(
        ...,
        description="One or more reference recordings (WAV, MP3, FLAC, OGG/Opus, M4A), at most MAX_REFERENCE_PARTS",
        json_schema_extra=documented_as(_reference_files_schema),
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

    name: str = Field("", max_length=200, pattern=NO_NUL)
    description: str = Field("", max_length=2000, pattern=NO_NUL)
    overwrite: bool = False


class SaveBlendBody(BaseModel):
    """A blend to save as a voice: its voices, as the string form or the list."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"blend": "Claribel Dervla:0.7+Andrew Chipper:0.3", "name": "Mixed"}]},
    )

    blend: str = Field(
        ...,
        min_length=3,
        max_length=1000,
        pattern=NO_NUL,
        description="2 to 4 voices (saved, built-in or aliases) with weights: voice:weight+voice:weight",
    )
    name: str = Field("", max_length=200, pattern=NO_NUL)
    description: str = Field("", max_length=2000, pattern=NO_NUL)
    overwrite: bool = False


class VoiceResponse(BaseModel):
    """A saved voice (its latents only with include_latents=true)."""

    id: str
    name: str
    description: str
    gpt_width: int = Field(..., description="Width of its GPT latents (1024 for XTTS-v2)")
    revision: str = Field(..., description="Changes on every write of the voice")
    source: str = Field(..., description="clone, latents, import or blend")
    content_hash: str | None
    recipe: str | None = Field(None, description="A blend's voices and weights (voice:weight+...)")
    created_at: datetime
    updated_at: datetime

    _as_utc = field_validator("created_at", "updated_at")(as_utc)

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
            recipe=info.recipe,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class VoiceWithLatents(VoiceResponse):
    gpt_cond_latent: list[list[float]] = Field(..., description="[rows, width], as it was saved (32 rows if cloned)")
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


class AliasPath(BaseModel):
    name: str = Field(
        ...,
        description="The alias: 1 to 64 characters, none of + : | = /",
        json_schema_extra=documented_as({"type": "string", "pattern": ALIAS_NAME_PATTERN}),
    )


class AliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"voice": "my-narrator"}]})

    voice: str = Field(
        ...,
        min_length=1,
        max_length=1000,
        pattern=NO_NUL,
        description="What the alias stands for: a saved voice id, a built-in speaker, one of OpenAI's voice names or a "
        "blend (voice:weight+...)",
    )


class AliasResponse(BaseModel):
    name: str
    voice: str
    created: datetime
    updated: datetime

    _as_utc = field_validator("created", "updated")(as_utc)

    @classmethod
    def of(cls, row: VoiceAlias) -> AliasResponse:
        return cls(name=row.name, voice=row.voice, created=row.created_at, updated=row.updated_at)


class Aliases(BaseModel):
    aliases: list[AliasResponse]


class DeletedAlias(BaseModel):
    deleted: str
