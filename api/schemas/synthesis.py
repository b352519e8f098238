"""The synthesis request that /tts_stream, /tts and /jobs take, in the farm's shape or the official XTTS server's."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from api.encoding import AudioFormat
from api.schemas.common import (
    CLONE_ECHO,
    FORMATS_DESCRIPTION,
    GPT_LATENT_SCHEMA,
    INPUT_FORMAT_DESCRIPTION,
    LANGUAGE_SCHEMA,
    MAX_REQUEST_SEGMENTS,
    NO_NUL,
    NORMALIZE_DESCRIPTION,
    PRIORITY_DESCRIPTION,
    SPEAKER_EMBEDDING_SCHEMA,
    CloneAnswerEcho,
    InlineLatents,
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
from shared.params import SynthesisParams
from shared.priority import Priority
from shared.ssml import InputFormat

# coqui's official XTTS streaming server takes `stream_chunk_size` as a string ("20"): the strings of 1..400.
CHUNK_SIZE_STRING = r"^(?:[1-9][0-9]?|[1-3][0-9]{2}|400)$"


OFFICIAL_LATENTS = ("gpt_cond_latent", "speaker_embedding")


class OfficialServerShape(CloneAnswerEcho):
    """The request shape of coqui's official XTTS streaming server (coqui-ai/xtts-streaming-server), accepted beside
    the farm's own so that its clients work unchanged: the latents at the top level of the body, `stream_chunk_size`
    as a string, `add_wav_header`, and whatever the farm's /clone_speaker answered echoed back (its test client sends
    the clone response itself, plus text and language). The latents are copied into `speaker_latents` before
    validation, so everything after it (and the other endpoints) sees the farm's own shape."""

    model_config = ConfigDict(extra="forbid")

    gpt_cond_latent: list[Any] | None = Field(
        None,
        description="The official server's shape: instead of speaker_latents, the latents at the top level "
        "([rows, width], e.g. 32 or 65 rows), with speaker_embedding.",
        json_schema_extra=documented_as(nullable(GPT_LATENT_SCHEMA)),
    )
    speaker_embedding: list[Any] | None = Field(
        None,
        description="The official server's shape: with gpt_cond_latent, at the top level ([512]).",
        json_schema_extra=documented_as(nullable(SPEAKER_EMBEDDING_SCHEMA)),
    )
    add_wav_header: bool = Field(
        True,
        strict=True,
        description="As the official server: false answers raw 16-bit little-endian PCM (24 kHz mono), no WAV header.",
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
    # The official server's add_wav_header: false is raw PCM, so it goes only with response_format wav or pcm (what
    # `_no_header_is_pcm` checks). Said with anyOf: the OpenAPI document keeps no if/then.
    schema["allOf"] = text_or_segments("text")  # what `_text_or_segments` checks
    schema["anyOf"] = [
        {"properties": {"add_wav_header": {"enum": [True]}}},
        {"properties": {"response_format": {"enum": ["wav", "pcm"]}}},
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

    text: str | None = Field(
        None,
        description="Text to speak, with at least one letter or digit; long texts are split into segments at "
        "sentence boundaries. Plain text (markdown, [pause:0.5s] tags) or SSML (see input_format). Either text or "
        "segments.",
        json_schema_extra=documented_as(lambda: nullable(text_schema())),
    )
    segments: list[TextSegment] | None = Field(
        None,
        min_length=1,
        max_length=MAX_REQUEST_SEGMENTS,
        description="Instead of text: pieces of text, each in its own voice and language where it names them "
        "(a dialogue, a book's characters), said one after another in one audio stream.",
    )
    language: str = Field(
        ...,
        description="Language code, one of GET /languages (e.g. en, de, zh-cn).",
        json_schema_extra=documented_as(LANGUAGE_SCHEMA),
    )
    speaker_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="A saved voice id (see /saved_voices) or a built-in speaker name (see /available_speakers).",
    )
    speaker_latents: InlineLatents | None = Field(
        None, description="Instead of speaker_id: conditioning latents as /clone_speaker returns them."
    )
    response_format: AudioFormat = Field("wav", description=FORMATS_DESCRIPTION)
    priority: Priority | None = Field(None, description=PRIORITY_DESCRIPTION)
    normalize: NormalizeMode = Field("auto", description=NORMALIZE_DESCRIPTION)
    input_format: InputFormat | None = Field(None, description=INPUT_FORMAT_DESCRIPTION)
    lexicons: list[LexiconName] | None = lexicons_field()

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        return None if value is None else not_blank(value, "text")

    @model_validator(mode="after")
    def _text_or_segments(self) -> TtsRequest:
        source_of(self.text, self.segments, "text")
        return self

    @property
    def source(self) -> str | list[TextSegment]:
        return source_of(self.text, self.segments, "text")

    @property
    def written(self) -> str:
        """Its text as written (the segments' one after another), as the job keeps it."""
        return self.text if self.text is not None else "\n".join(item.text for item in self.segments or [])

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
        # So does what comes along with inline latents from a clone answer.
        # How urgently it is served is not what it says either.
        restated: dict[str, Any] = dict.fromkeys(
            ("response_format", "priority", *OfficialServerShape.model_fields), True
        )
        return self.model_dump_json(exclude={**restated, "speaker_latents": set(CLONE_ECHO)})

    def synthesis_params(self) -> dict[str, Any]:
        return SynthesisParams.model_validate(self.model_dump(include=set(SynthesisParams.model_fields))).model_dump()
