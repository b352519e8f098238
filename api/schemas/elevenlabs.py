"""ElevenLabs' text-to-speech API as voice-agent frameworks (pipecat, LiveKit Agents) speak it: the HTTP bodies and
answers of /v1/text-to-speech and /v1/voices, and the messages of the stream-input WebSockets. Names and casing are
ElevenLabs' own (snake_case in requests, camelCase in the socket's answers), so that a client works against the farm
by changing only its base URL. What XTTS has no use for (stability, similarity_boost, style, use_speaker_boost,
model_id) is accepted and has no effect; a `seed` is the farm's (`xtts_seed`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from api.output_formats import OUTPUT_FORMATS
from api.schemas.common import LANGUAGE_SCHEMA, NO_NUL, LexiconName, documented_as, not_blank, text_schema
from shared.normalization import NormalizeMode
from shared.params import MAX_TOKENS_PER_SEGMENT

MAX_PIECE_CHARS = 10_000
MAX_KEY_CHARS = 200
MAX_CONTEXT_ID_CHARS = 200
TextNormalization = Literal["auto", "on", "off"]


def normalize_mode(setting: TextNormalization) -> NormalizeMode:
    """ElevenLabs' apply_text_normalization as the farm's normalize: on and auto normalise, off does not."""
    return "off" if setting == "off" else "auto"


def _not_a_bool(value: Any) -> Any:
    """JSON's true and false are not numbers (pydantic would take them as 1 and 0); 50.0 still is 50."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    return value


NumberNotBool = Annotated[int | None, BeforeValidator(_not_a_bool)]


class VoiceSettings(BaseModel):
    """ElevenLabs' voice settings. `speed` is XTTS's speed; the others have no counterpart in XTTS (accepted, no
    effect)."""

    model_config = ConfigDict(extra="forbid")

    stability: float | None = Field(None, ge=0.0, le=1.0)
    similarity_boost: float | None = Field(None, ge=0.0, le=1.0)
    style: float | None = Field(None, ge=0.0, le=1.0)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(None, ge=0.7, le=1.2, description="Speaking rate, 0.7 to 1.2 (1: normal).")


class DictionaryLocator(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pronunciation_dictionary_id: LexiconName = Field(..., description="A lexicon of the farm's (GET /lexicons).")
    version_id: str | None = Field(None, max_length=64, pattern=NO_NUL)


class TextToSpeechRequest(BaseModel):
    """The body of POST /v1/text-to-speech/{voice_id} (and /stream, /with-timestamps, /stream/with-timestamps)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Hello there.", "model_id": "eleven_flash_v2_5"}]},
    )

    text: str = Field(..., description="The text to speak.", json_schema_extra=documented_as(text_schema))
    model_id: str | None = Field(
        None, max_length=100, pattern=NO_NUL, description="Accepted; the farm serves its one model."
    )
    language_code: str | None = Field(
        None,
        description="The language (one of GET /languages; default en).",
        json_schema_extra=documented_as(lambda: {"anyOf": [LANGUAGE_SCHEMA, {"type": "null"}]}),
    )
    voice_settings: VoiceSettings | None = None
    pronunciation_dictionary_locators: list[DictionaryLocator] | None = Field(
        None,
        max_length=3,
        description="The farm's lexicons (GET /lexicons) to apply, by name as `pronunciation_dictionary_id`.",
    )
    seed: NumberNotBool = Field(
        None,
        ge=0,
        le=4294967295,
        description="Sampling seed: the same text, voice, settings and seed make the same audio (made once: the farm "
        "reuses it).",
    )
    # No string holds a NUL (api/request_bounds.py refuses one anywhere in a body): each says so.
    previous_text: str | None = Field(
        None, max_length=MAX_PIECE_CHARS, pattern=NO_NUL, description="Accepted, not used."
    )
    next_text: str | None = Field(None, max_length=MAX_PIECE_CHARS, pattern=NO_NUL, description="Accepted, not used.")
    previous_request_ids: list[Annotated[str, Field(pattern=NO_NUL)]] | None = Field(None, max_length=3)
    next_request_ids: list[Annotated[str, Field(pattern=NO_NUL)]] | None = Field(None, max_length=3)
    use_pvc_as_ivc: bool | None = None
    apply_text_normalization: TextNormalization = "auto"
    apply_language_text_normalization: bool | None = None
    # Extensions: the farm's bounds on a segment's audio tokens (tests and benchmarks pin the dev model's length).
    min_new_tokens: NumberNotBool = Field(None, ge=1, le=MAX_TOKENS_PER_SEGMENT, description="Extension.")
    max_new_tokens: NumberNotBool = Field(None, ge=1, le=MAX_TOKENS_PER_SEGMENT, description="Extension.")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return not_blank(value, "text")


OUTPUT_FORMAT_SCHEMA = {"type": "string", "enum": list(OUTPUT_FORMATS)}


class TextToSpeechQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients add query parameters with every release

    output_format: str = Field(
        "mp3_44100_128",
        description="codec_samplerate[_bitrate]: raw 16-bit PCM (pcm_*), G.711 (ulaw_8000, alaw_8000), MP3, Opus",
        json_schema_extra=documented_as(OUTPUT_FORMAT_SCHEMA),
    )
    optimize_streaming_latency: int | None = Field(None, ge=0, le=4, description="Accepted, no effect.")
    enable_logging: bool | None = None


class HttpAlignment(BaseModel):
    """Character timing on HTTP: float seconds from the start of the request's audio."""

    characters: list[str]
    character_start_times_seconds: list[float]
    character_end_times_seconds: list[float]


class AudioWithTimestamps(BaseModel):
    """The answer of /with-timestamps, and each line of /stream/with-timestamps."""

    audio_base64: str
    alignment: HttpAlignment | None
    normalized_alignment: HttpAlignment | None
    alignment_source: Literal["attention", "estimate"] = Field(
        "estimate",
        description="Where the timing within segments comes from: `attention` (XTTS's attention from audio to text "
        "tokens, in every segment) or `estimate` (proportional to the text, in some segment at least); exact at "
        "every segment boundary either way.",
    )


class ElevenLabsVoice(BaseModel):
    voice_id: str
    name: str
    category: str
    labels: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    preview_url: str | None = None
    available_for_tiers: list[str] = Field(default_factory=list)
    high_quality_base_model_ids: list[str] = Field(default_factory=list)
    settings: dict[str, Any] | None = None


class ElevenLabsVoices(BaseModel):
    voices: list[ElevenLabsVoice]


class SocketQuery(BaseModel):
    """The query of both stream-input sockets (parameters of ElevenLabs' that the farm does not know are ignored:
    clients send more of them with every release)."""

    model_config = ConfigDict(extra="ignore")

    model_id: str | None = Field(None, max_length=100)
    language_code: str = Field("en", min_length=1, max_length=16)
    output_format: str = Field("mp3_44100_128", max_length=32)
    auto_mode: bool = False
    inactivity_timeout: int = Field(20, ge=1, le=180)
    apply_text_normalization: TextNormalization = "auto"
    sync_alignment: bool | None = None
    enable_logging: bool | None = None
    enable_ssml_parsing: bool | None = None
    seed: int | None = Field(None, ge=0, le=4294967295, description="Sampling seed of the socket's contexts.")
    authorization: str | None = Field(None, max_length=MAX_KEY_CHARS)


def xtts_seed(seed: int | None) -> int | None:
    """ElevenLabs' seed (32 bits, unsigned) as the farm's (31: shared.params.SynthesisParams.seed). ElevenLabs makes
    a best effort to sample deterministically with it; here it makes the audio reproducible, and reused
    (shared/result_cache.py)."""
    return None if seed is None else seed & 0x7FFFFFFF


# --- the stream-input WebSockets' messages ------------------------------------------------------------------------
class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_length_schedule: list[Annotated[int, Field(ge=50, le=500)]] | None = Field(
        None, min_length=1, max_length=16, description="Characters before text is spoken without a sentence end."
    )


class _Message(BaseModel):
    """What both sockets' client messages may carry."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = Field(None, max_length=MAX_PIECE_CHARS, pattern=NO_NUL)
    flush: bool = False
    try_trigger_generation: bool | None = None
    voice_settings: VoiceSettings | None = None
    generation_config: GenerationConfig | None = None
    generator_config: GenerationConfig | None = None  # the SDK's spelling in its SendText
    pronunciation_dictionary_locators: list[DictionaryLocator] | None = Field(None, max_length=3)
    xi_api_key: str | None = Field(None, max_length=MAX_KEY_CHARS)
    xi_api_key_hyphen: str | None = Field(None, alias="xi-api-key", max_length=MAX_KEY_CHARS)
    authorization: str | None = Field(None, max_length=MAX_KEY_CHARS)

    @property
    def key(self) -> str | None:
        return self.xi_api_key or self.xi_api_key_hyphen or self.authorization


class StreamInputMessage(_Message):
    """A message of /stream-input (one context): `{"text": " "}` first (with settings), text pieces, `flush`, and
    `{"text": ""}` at the end of the text."""


class MultiStreamInputMessage(_Message):
    """A message of /multi-stream-input: the same, each naming its `context_id`, plus `close_context` and
    `close_socket`; `{"text": ""}` keeps a context alive. `voice_id` and `language_code` (extensions) give a context
    its own voice or language."""

    context_id: str | None = Field(None, min_length=1, max_length=MAX_CONTEXT_ID_CHARS, pattern=NO_NUL)
    context_id_camel: str | None = Field(
        None, alias="contextId", min_length=1, max_length=MAX_CONTEXT_ID_CHARS, pattern=NO_NUL
    )
    close_context: bool = False
    close_socket: bool = False
    voice_id: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    language_code: str | None = Field(None, min_length=1, max_length=16)

    @property
    def context(self) -> str:
        return self.context_id or self.context_id_camel or "default"
