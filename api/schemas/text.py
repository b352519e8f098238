"""What a text will be said as: POST /v1/text/normalize."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.common import (
    INPUT_FORMAT_DESCRIPTION,
    LANGUAGE_SCHEMA,
    MAX_REQUEST_SEGMENTS,
    NO_NUL,
    NORMALIZE_DESCRIPTION,
    LexiconName,
    TextSegment,
    documented_as,
    lexicons_field,
    not_blank,
    nullable,
    source_of,
    text_or_segments,
    text_schema,
)
from shared.normalization import NormalizeMode
from shared.ssml import InputFormat


def _normalize_request_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = [{"input": "It costs $5.50 at 9:05 pm on 2024-03-15.", "language": "en"}]
    schema["allOf"] = text_or_segments("input")  # what `_input_or_segments` checks


class NormalizeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_normalize_request_schema,
    )

    input: str | None = Field(
        None,
        description="The text, as a synthesis request would send it (either input or segments).",
        json_schema_extra=documented_as(lambda: nullable(text_schema())),
    )
    segments: list[TextSegment] | None = Field(
        None,
        min_length=1,
        max_length=MAX_REQUEST_SEGMENTS,
        description="Instead of input: a synthesis request's segments, each in its own voice and language.",
    )
    language: str = Field(
        ..., description="Language code, one of GET /languages.", json_schema_extra=documented_as(LANGUAGE_SCHEMA)
    )
    input_format: InputFormat | None = Field(None, description=INPUT_FORMAT_DESCRIPTION)
    lexicons: list[LexiconName] | None = lexicons_field()
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
    def _input_not_blank(cls, value: str | None) -> str | None:
        return None if value is None else not_blank(value, "input")

    @model_validator(mode="after")
    def _input_or_segments(self) -> NormalizeRequest:
        source_of(self.input, self.segments, "input")
        return self

    @property
    def source(self) -> str | list[TextSegment]:
        return source_of(self.input, self.segments, "input")


class SpokenSegment(BaseModel):
    text: str = Field(..., description="What the worker is given to say: one segment (empty for a pause)")
    language: str
    voice: str | None
    speed: float | None = Field(None, description="Its own speed (a <prosody rate>), else the request's")
    pause_ms: int = Field(0, description="A pause: this many milliseconds of silence (a <break>, a [pause:...])")


class NormalizeResponse(BaseModel):
    segments: list[SpokenSegment]
    warnings: list[str] = Field(..., description="What normalisation left out or could not do; never spoken")
    lexicons: list[str] = Field(..., description="The pronunciation lexicons that respelled the text, in order")
