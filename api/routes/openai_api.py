"""OpenAI-compatible speech API under /v1: what apps written for OpenAI's TTS (and the `openai` package, pointed at
the farm's base URL) call. Synthesis goes through the same submission and delivery as /tts_stream: one slot per
response, audio streamed as made, a client that leaves cancels its job. Errors keep the farm's one contract and
add the fields OpenAI's clients read (`type`, `param`): api/errors.py does that for every path under /v1/."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ValidationError

from api.auth import caller
from api.encoding import MEDIA_TYPES
from api.errors import invalid_input_from
from api.framing import sse_event
from api.responses import json_model
from api.routes.synthesis import stream_synthesis
from api.schemas.common import ErrorResponse, audio_response
from api.schemas.openai_api import (
    OPENAI_MODELS,
    SPEECH_EVENT_SCHEMA,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceCard,
    VoiceList,
)
from api.voice_catalog import VoiceCatalog

bp = APIBlueprint(
    "openai", __name__, url_prefix="/v1", abp_tags=[Tag(name="openai", description="OpenAI-compatible speech API")]
)

# When the farm's models "were created", for /v1/models (OpenAI's clients require the field): XTTS-v2's release.
XTTS_V2_RELEASED = 1_700_000_000
_AUDIO = audio_response("stream_format audio: the audio, streamed as it is synthesized")
SPEECH_RESPONSE = {
    "description": _AUDIO["description"] + "; stream_format sse: `speech.audio.delta` events (base64 audio in "
    "response_format), then `speech.audio.done`",
    "content": {**_AUDIO["content"], "text/event-stream": {"schema": SPEECH_EVENT_SCHEMA}},
}
ERRORS: dict[int | str, type[BaseModel] | dict[str, Any] | None] = {
    400: ErrorResponse,
    413: ErrorResponse,
    429: ErrorResponse,
}


def sse_frames(audio: Iterator[bytes]) -> Iterator[bytes]:
    """OpenAI's speech events: each piece of encoded audio as it leaves the encoder, then the end."""
    size = 0
    for data in audio:
        size += len(data)
        yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
    # OpenAI's clients expect usage; XTTS bills nothing, so it is all zeros, and the byte count is an extension.
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    yield sse_event({"type": "speech.audio.done", "usage": usage, "audio_bytes": size})


@bp.post("/audio/speech", responses={200: SPEECH_RESPONSE, **ERRORS})
def create_speech(body: SpeechRequest) -> Response:
    """Synthesize `input` with `voice` (a saved voice of the caller's tenant or a built-in speaker), streamed as
    it is made, in `response_format` (default mp3). `instructions` is accepted and ignored; `language` (default en)
    is an extension. A client that disconnects before the end cancels the synthesis."""
    try:
        request = body.tts_request()
    except ValidationError as exc:  # a rule across fields (min_new_tokens <= max_new_tokens): 400, like /tts_stream
        raise invalid_input_from(exc, "request") from None
    if body.stream_format == "sse":
        return stream_synthesis(request, "text/event-stream", frame=sse_frames)
    return stream_synthesis(request, MEDIA_TYPES[body.response_format])


@bp.get("/models", responses={200: ModelList})
def list_models() -> Response:
    """The model ids /v1/audio/speech accepts: xtts-v2 (and xtts_v2), and OpenAI's ids as aliases of it."""
    cards = [ModelCard(id=model, created=XTTS_V2_RELEASED, owned_by="xtts-farm") for model in OPENAI_MODELS]
    return json_model(ModelList(data=cards))


@bp.get("/audio/voices", responses={200: VoiceList})
def list_voices() -> Response:
    """The voices the caller may use: the live workers' built-in speakers, OpenAI's voice names (each an alias of
    one of them) and the tenant's saved voices."""
    catalog = VoiceCatalog.of(caller().tenant)
    cards = [VoiceCard(id=name, name=name, type="builtin") for name in catalog.builtin]
    cards += [VoiceCard(id=alias, name=alias, type="alias", voice=voice) for alias, voice in catalog.aliases.items()]
    cards += [VoiceCard(id=v.id, name=v.name, type="saved") for v in catalog.saved]
    return json_model(VoiceList(data=cards))
