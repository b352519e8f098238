"""What several capabilities' models share: the error contract, inline latents and their JSON Schema, the audio
formats of responses, and the helpers that make the OpenAPI document say exactly what is accepted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from api.encoding import DESCRIPTIONS, MEDIA_TYPES
from voices_store.ids import VOICE_ID_PATTERN
from voices_store.latents import EMBEDDING_DIM, MAX_ABS_VALUE, MAX_GPT_ROWS, MAX_GPT_WIDTH


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
_ROW = _array(_VALUE, most=MAX_GPT_WIDTH)  # one row: `width` numbers (1024 for XTTS-v2), the same in every row
_ROWS = _array(_ROW, most=MAX_GPT_ROWS)
GPT_LATENT_SCHEMA = {"anyOf": [_ROWS, _array(_ROWS, 1)]}
GPT_LATENT_SHAPE = (
    f"[rows, width] or [1, rows, width]: 1 to {MAX_GPT_ROWS} rows (XTTS-v2's cloning makes 32), every row as wide "
    "as the model's GPT (1024 for XTTS-v2)"
)
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
        description=GPT_LATENT_SHAPE,
        json_schema_extra=documented_as(GPT_LATENT_SCHEMA),
    )
    speaker_embedding: list[Any] = Field(
        ..., description="[512] or [1, 512, 1]", json_schema_extra=documented_as(SPEAKER_EMBEDDING_SCHEMA)
    )


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


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


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: the farm stores UTC, so say so (clients always get an offset)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
