"""What several capabilities' models share: the error contract, inline latents and their JSON Schema, the audio
formats of responses, and the helpers that make the OpenAPI document say exactly what is accepted."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.encoding import DESCRIPTIONS, MEDIA_TYPES
from shared import utc
from shared.languages import XTTS_V2_LANGUAGES
from shared.lexicons import LEXICON_NAME_PATTERN, MAX_LEXICONS_PER_TENANT
from shared.settings import get_settings
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


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` written out where they are used: one that can be embedded in another
    document (a form field's) whose `$defs` it cannot refer to."""
    defs = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


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
# XTTS-v2's languages: what the workers of an XTTS-v2 farm speak (a worker serving another checkpoint may speak
# fewer: GET /languages says, and a language it lacks is a 400 unknown_language).
LANGUAGE_SCHEMA = {"type": "string", "enum": list(XTTS_V2_LANGUAGES)}


# No string of a request may hold a NUL character (api/request_bounds.py refuses it everywhere: PostgreSQL cannot
# store one). `\x00` reads the same in JSON Schema's (ECMA-262), Python's and pydantic's regular expressions.
NO_NUL = r"^[^\x00]*$"
# "Blank" as ECMA-262's \s: spelled out, because \s differs between regular expression engines (Python's also
# counts \x1c-\x1f and \x85, Rust's not \ufeff), and the document and the check below must agree on every character.
_BLANK = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_NOT_BLANK = re.compile(f"[^{_BLANK}]")


def words_schema(max_length: int) -> dict[str, Any]:
    """A string with something besides blanks (what `not_blank` checks), no NUL, at most `max_length` long."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": f"^[^\\x00]*[^\\x00{_BLANK}][^\\x00]*$",
    }


def text_schema() -> dict[str, Any]:
    """A text to speak: something besides blanks, no NUL, at most MAX_TEXT_CHARS (read when the document is made,
    from the farm's settings; a longer text is a 413)."""
    return words_schema(get_settings().MAX_TEXT_CHARS)


def not_blank(value: str, name: str) -> str:
    """`value`, unless it is only blanks (as text_schema's pattern defines them)."""
    if not _NOT_BLANK.search(value):
        raise ValueError(f"{name} is empty")
    return value


NORMALIZE_DESCRIPTION = (
    "auto (default): numbers, amounts, units, dates, times, phone numbers, e-mail addresses and URLs are said as "
    "words in the request's language, markdown and code blocks left out (POST /v1/text/normalize shows the result); "
    "off: the text as written, through XTTS's own cleaners only"
)
INPUT_FORMAT_DESCRIPTION = (
    "text: plain text or markdown, with [pause:0.5s] tags for silences; ssml: an SSML document (<speak> with break, "
    "say-as, sub, lang, voice, prosody rate, emphasis, p and s; README: SSML). Not given: ssml when the text starts "
    "with <speak>, else text"
)
PRIORITY_DESCRIPTION = (
    "Class of work: `live` (a listener hears it as it is made: served first, in the broker and in a worker's batch) "
    "or `bulk` (nobody listens in real time: it yields to live work and takes what capacity is left). Default: "
    "`live` for /tts_stream, /tts and /v1/audio/speech, `bulk` for /jobs."
)
FORMATS_DESCRIPTION = (
    "Audio format of the response: "
    + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items())
    + (". A /jobs job's audio format is chosen when it is fetched (GET /jobs/{id}/audio?response_format=...).")
)


def event_schema(events: dict[str, str], with_id: str | None = None) -> dict[str, Any]:
    """One Server-Sent Event of a text/event-stream response, as OpenAPI 3.1 tools read its `schema` (an object of
    the event's fields: its `event` name, `message` when it has none, `data`, and `id`); `events`: name -> what its
    data holds (compact JSON)."""
    properties: dict[str, Any] = {
        "event": {"type": "string", "enum": list(events)},
        "data": {"type": "string", "contentMediaType": "application/json"},
    }
    if with_id is not None:
        properties["id"] = {"type": "string", "pattern": with_id, "description": "The last event id so far"}
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": properties,
        "description": "; ".join(f"`{name}`: {what}" for name, what in events.items()),
    }


def audio_response(what: str) -> dict[str, Any]:
    """An OpenAPI response with one media type per audio format (`response_format` chooses which)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "description": f"{what}, in the requested response_format (24 kHz mono)",
        "content": {media_type.split(";")[0]: binary for media_type in MEDIA_TYPES.values()},
    }


class CloneAnswerEcho(BaseModel):
    """What /clone_speaker answers besides the latents, which clients send back with them (the official server's
    test client sends the whole answer): accepted and ignored."""

    content_hash: str | None = Field(
        None, max_length=128, pattern=NO_NUL, description="Accepted and ignored (from /clone_speaker)."
    )
    reused: bool | None = Field(None, strict=True, description="Accepted and ignored (from /clone_speaker).")
    reference_seconds: float | None = Field(
        None, strict=True, description="Accepted and ignored (from /clone_speaker)."
    )


CLONE_ECHO = tuple(CloneAnswerEcho.model_fields)


class InlineLatents(CloneAnswerEcho):
    """Conditioning latents as /clone_speaker returns them (squeezed or not; the rest of its answer may come along)."""

    model_config = ConfigDict(extra="forbid")

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
    """A stored time with its UTC offset (clients always get one), or None."""
    return None if value is None else utc.as_utc(value)


def either(first: str, first_type: str, second: str, second_type: str) -> list[dict[str, Any]]:
    """JSON Schema's `allOf` saying that a body has exactly one of two fields, the other absent or null."""
    return [
        {
            "oneOf": [
                {"required": [first], "properties": {first: {"type": first_type}, second: {"type": "null"}}},
                {"required": [second], "properties": {second: {"type": second_type}, first: {"type": "null"}}},
            ]
        }
    ]


def text_or_segments(name: str) -> list[dict[str, Any]]:
    """A request has either its text (`name`) or `segments`, not both."""
    return either(name, "string", "segments", "array")


LexiconName = Annotated[str, Field(pattern=LEXICON_NAME_PATTERN, min_length=1, max_length=64)]
LEXICONS_DESCRIPTION = (
    "Pronunciation lexicons to respell the text with (their names; where two respell one word, the first named "
    "wins). Not given: all of the tenant's (GET /lexicons); []: none."
)


def lexicons_field() -> Any:
    return Field(None, max_length=MAX_LEXICONS_PER_TENANT, description=LEXICONS_DESCRIPTION)


# At most this many pieces in a request's `segments` (each is at least one segment of its own).
MAX_REQUEST_SEGMENTS = 1000


class TextSegment(BaseModel):
    """One piece of a request's `segments`: its text, said in its own voice and language where it names them."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        ...,
        description="Text to say (plain text; [pause:0.5s] tags are pauses).",
        json_schema_extra=documented_as(text_schema),
    )
    voice: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Its voice: a saved voice id, a built-in speaker or an alias (OpenAI's voice names); "
        "null: the request's speaker_id.",
    )
    language: str | None = Field(
        None,
        description="Its language, one of GET /languages; null: the request's.",
        json_schema_extra=documented_as(nullable(LANGUAGE_SCHEMA)),
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return not_blank(value, "a segment's text")


def source_of(text: str | None, segments: list[TextSegment] | None, name: str) -> str | list[TextSegment]:
    """What a request says: its text (`name`) or its segments, exactly one of them."""
    if (text is None) == (segments is None):
        raise ValueError(f"give exactly one of {name} and segments")
    return text if text is not None else list(segments or [])
