"""The OpenAI-compatible speech API (/v1/*): the shapes OpenAI's clients send and parse."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.encoding import AudioFormat
from api.schemas.common import (
    INPUT_FORMAT_DESCRIPTION,
    LANGUAGE_SCHEMA,
    NO_NUL,
    NORMALIZE_DESCRIPTION,
    PRIORITY_DESCRIPTION,
    LexiconName,
    documented_as,
    event_schema,
    lexicons_field,
    not_blank,
    text_schema,
)
from api.schemas.synthesis import TtsRequest
from shared.blends import MAX_BLEND_VOICES
from shared.normalization import NormalizeMode
from shared.priority import Priority
from shared.ssml import InputFormat

# xtts-v2 as OpenAI-style ids are spelled, xtts_v2 as XTTS_MODEL and coqui spell it; then OpenAI's ids as aliases.
OpenAIModel = Literal["xtts-v2", "xtts_v2", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
OPENAI_MODELS: tuple[str, ...] = get_args(OpenAIModel)


SPEECH_EVENT_SCHEMA = event_schema(
    {
        "message": "OpenAI's speech events, no event name: {type: speech.audio.delta, audio} (base64 audio in "
        "response_format) for each piece, then {type: speech.audio.done, usage, audio_bytes}"
    }
)


class VoiceRef(BaseModel):
    """A custom voice as the `openai` client sends it: `{"id": "my-voice"}`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=200, pattern=NO_NUL)


BLEND_VOICE_PATTERN = r"^[^\x00+:|=]*$"  # a voice's name, without what a blend's string form uses


class BlendVoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voice: str = Field(..., min_length=1, max_length=200, pattern=BLEND_VOICE_PATTERN)
    weight: float = Field(..., gt=0, le=100)


BLEND_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["blend"],
    "properties": {
        "blend": {
            "type": "array",
            "minItems": 2,
            "maxItems": MAX_BLEND_VOICES,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["voice", "weight"],
                "properties": {
                    "voice": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": BLEND_VOICE_PATTERN},
                    "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                },
            },
        }
    },
}


class BlendRef(BaseModel):
    """An extension: voices mixed by weight, `{"blend": [{"voice": "alloy", "weight": 0.7}, ...]}` (the same as the
    string `alloy:0.7+...`)."""

    model_config = ConfigDict(extra="forbid")

    blend: list[BlendVoice] = Field(..., min_length=2, max_length=MAX_BLEND_VOICES)

    def written(self) -> str:
        return "+".join(f"{part.voice}:{part.weight:g}" for part in self.blend)


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech, as OpenAI's `client.audio.speech.create` sends it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "xtts-v2", "input": "Hello there.", "voice": "Claribel Dervla"}]},
    )

    model: OpenAIModel = Field(
        ...,
        description="xtts-v2 (or xtts_v2, as XTTS_MODEL spells it), or one of OpenAI's model ids (aliases: every one "
        "is XTTS-v2 here)",
    )
    input: str = Field(
        ...,
        description="The text to speak (at most MAX_TEXT_CHARS characters; long texts are split into segments).",
        json_schema_extra=documented_as(text_schema),
    )
    voice: str | VoiceRef | BlendRef = Field(
        ...,
        description="A saved voice id of the caller's tenant, a built-in speaker name, or one of OpenAI's voice names "
        '(alloy, ash, ... each standing for a built-in speaker; see GET /v1/audio/voices); also as {"id": ...}. An '
        'extension: a blend of 2 to 4 voices, "alloy:0.7+ash:0.3" or {"blend": [{"voice": ..., "weight": ...}]}',
        json_schema_extra=documented_as(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL},
                    VoiceRef.model_json_schema(),
                    BLEND_SCHEMA,
                ]
            }
        ),
    )
    response_format: AudioFormat = Field("mp3", description="Audio format (default mp3, as OpenAI's)")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="Speaking rate; 1.0 is the model's own.")
    priority: Priority | None = Field(None, description="An extension: " + PRIORITY_DESCRIPTION)
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="audio: the encoded bytes, streamed as made; sse: Server-Sent Events `speech.audio.delta` "
        "(base64 audio in response_format) then `speech.audio.done`",
    )
    instructions: str | None = Field(
        None,
        max_length=4096,
        pattern=NO_NUL,
        description="Accepted for compatibility and ignored: XTTS takes no style prompt.",
    )
    language: str = Field(
        "en",
        description="Extension: language code (default en), one of GET /languages.",
        json_schema_extra=documented_as({**LANGUAGE_SCHEMA, "default": "en"}),
    )
    normalize: NormalizeMode = Field("auto", description="Extension: " + NORMALIZE_DESCRIPTION)
    input_format: InputFormat | None = Field(None, description="Extension: " + INPUT_FORMAT_DESCRIPTION)
    lexicons: list[LexiconName] | None = lexicons_field()
    min_new_tokens: int | None = Field(
        None, ge=1, le=605, description="Extension, advanced: lower bound on audio tokens per segment."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=605, description="Extension, advanced: upper bound on audio tokens per segment."
    )

    @field_validator("input")
    @classmethod
    def _input_not_blank(cls, value: str) -> str:
        return not_blank(value, "input")

    @field_validator("voice")
    @classmethod
    def _voice_not_blank(cls, value: str | VoiceRef | BlendRef) -> str | VoiceRef | BlendRef:
        if isinstance(value, str) and not 1 <= len(value) <= 200:
            raise ValueError("voice must be 1 to 200 characters")
        return value

    def tts_request(self) -> TtsRequest:
        voice = self.voice.id if isinstance(self.voice, VoiceRef) else self.voice
        voice = voice.written() if isinstance(voice, BlendRef) else voice
        return TtsRequest(
            text=self.input,
            language=self.language,
            speaker_id=voice,
            speed=self.speed,
            priority=self.priority,
            response_format=self.response_format,
            min_new_tokens=self.min_new_tokens,
            max_new_tokens=self.max_new_tokens,
            normalize=self.normalize,
            input_format=self.input_format,
            lexicons=self.lexicons,
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
    type: Literal["builtin", "saved", "alias"] = Field(
        ...,
        description="alias: one of OpenAI's voice names or the tenant's own aliases (GET /voice_aliases), standing "
        "for the voice in `voice`",
    )
    voice: str | None = Field(None, description="For an alias: the voice it stands for")


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
