"""What a text will be said as: POST /v1/text/normalize."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import (
    INPUT_FORMAT_DESCRIPTION,
    LANGUAGE_SCHEMA,
    NO_NUL,
    NORMALIZE_DESCRIPTION,
    documented_as,
    not_blank,
    text_schema,
)
from shared.normalization import NormalizeMode
from shared.ssml import InputFormat


class NormalizeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"input": "It costs $5.50 at 9:05 pm on 2024-03-15.", "language": "en"}]},
    )

    input: str = Field(
        ..., description="The text, as a synthesis request would send it.", json_schema_extra=documented_as(text_schema)
    )
    language: str = Field(
        ..., description="Language code, one of GET /languages.", json_schema_extra=documented_as(LANGUAGE_SCHEMA)
    )
    input_format: InputFormat | None = Field(None, description=INPUT_FORMAT_DESCRIPTION)
    normalize: NormalizeMode = Field("auto", description=NORMALIZE_DESCRIPTION)
    voice: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="The voice the segments would be said in (speaker_id, or OpenAI's voice), echoed in each segment.",
    )

    @field_validator("input")
    @classmethod
    def _input_not_blank(cls, value: str) -> str:
        return not_blank(value, "input")


class SpokenSegment(BaseModel):
    text: str = Field(..., description="What the worker is given to say: one segment (empty for a pause)")
    language: str
    voice: str | None
    speed: float | None = Field(None, description="Its own speed (a <prosody rate>), else the request's")
    pause_ms: int = Field(0, description="A pause: this many milliseconds of silence (a <break>, a [pause:...])")


class NormalizeResponse(BaseModel):
    segments: list[SpokenSegment]
    warnings: list[str] = Field(..., description="What normalisation left out or could not do; never spoken")
