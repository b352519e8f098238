"""ElevenLabs' text-to-speech API under /v1, for voice-agent frameworks that speak it (pipecat, LiveKit Agents):
audio (`/v1/text-to-speech/{voice_id}` and `/stream`), audio with character timing (`/with-timestamps`, and
`/stream/with-timestamps` as JSON lines), the voices (`/v1/voices`), and the stream-input WebSockets
(api/agent_socket.py). `voice_id` is a saved voice of the caller's tenant, a built-in speaker or an alias (a blend
too), as `speaker_id` anywhere else. Errors keep the farm's contract and add ElevenLabs' `detail` (api/errors.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, ValidationError

from api import agent_socket
from api.auth import caller
from api.client import ClientConnection
from api.delivery import job_chunks
from api.errors import invalid_input_from
from api.output_formats import OutputFormat, output_format
from api.responses import json_model
from api.routes.synthesis import stream_synthesis
from api.schemas.common import NO_NUL, ErrorResponse
from api.schemas.elevenlabs import (
    AudioWithTimestamps,
    ElevenLabsVoice,
    ElevenLabsVoices,
    HttpAlignment,
    TextToSpeechQuery,
    TextToSpeechRequest,
    normalize_mode,
    xtts_seed,
)
from api.schemas.synthesis import TtsRequest
from api.voice_catalog import VoiceCatalog
from shared import jobs
from shared.alignment import ATTENTION, ESTIMATE, CharTiming, UtteranceAligner
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH
from shared.errors import NotFound
from shared.models import Job
from shared.params import SynthesisParams

bp = APIBlueprint(
    "elevenlabs",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="elevenlabs", description="ElevenLabs-compatible text-to-speech API (voice agents)")],
)
# The WebSockets: not OpenAPI operations (a GET that upgrades), so on a plain blueprint.
sockets = Blueprint("agent_sockets", __name__, url_prefix="/v1/text-to-speech")


class VoicePath(BaseModel):
    voice_id: str = Field(
        ..., min_length=1, max_length=200, pattern=NO_NUL, description="A saved voice, built-in speaker or alias."
    )


ERRORS: dict[int | str, type[BaseModel] | dict[str, Any] | None] = {
    400: ErrorResponse,
    404: ErrorResponse,
    413: ErrorResponse,
    429: ErrorResponse,
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_AUDIO = {
    "description": "The audio in output_format, streamed as it is synthesized (pcm_*: raw 16-bit little-endian mono at "
    "its rate; ulaw_8000, alaw_8000: G.711 at 8 kHz; mp3_*; opus_*: Ogg Opus)",
    "content": dict.fromkeys(("audio/mpeg", "audio/pcm", "audio/basic", "audio/x-alaw-basic", "audio/ogg"), _BINARY),
}
_TIMED_LINES = {
    "description": "One JSON object per line (application/x-ndjson), each a piece of the audio with the timing of the "
    "characters it carries, as /with-timestamps answers it whole",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
}


def _tts_request(voice_id: str, body: TextToSpeechRequest) -> TtsRequest:
    settings = body.voice_settings
    locators = body.pronunciation_dictionary_locators
    try:
        return TtsRequest(
            text=body.text,
            language=body.language_code or "en",
            speaker_id=voice_id,
            speed=settings.speed if settings is not None and settings.speed else 1.0,
            normalize=normalize_mode(body.apply_text_normalization),
            lexicons=[item.pronunciation_dictionary_id for item in locators] if locators is not None else None,
            response_format="pcm",
            input_format="text",  # ElevenLabs reads no SSML over HTTP
            min_new_tokens=body.min_new_tokens,
            max_new_tokens=body.max_new_tokens,
            seed=xtts_seed(body.seed),
        )
    except ValidationError as exc:
        raise invalid_input_from(exc, "request") from None


def _query(query: TextToSpeechQuery) -> OutputFormat:
    return output_format(query.output_format)


def reencoded(fmt: OutputFormat) -> Callable[[Iterator[bytes]], Iterator[bytes]]:
    """The farm's 24 kHz PCM as `fmt`, chunk by chunk."""

    def frames(pcm_chunks: Iterator[bytes]) -> Iterator[bytes]:
        encoder = fmt.encoder()
        try:
            for pcm in pcm_chunks:
                if data := encoder.chunk(pcm):
                    yield data
            if tail := encoder.finish():
                yield tail
        finally:
            encoder.close()

    return frames


def _audio(voice_id: str, body: TextToSpeechRequest, query: TextToSpeechQuery) -> Response:
    fmt = _query(query)
    return stream_synthesis(_tts_request(voice_id, body), fmt.media_type, frame=reencoded(fmt))


@bp.post("/text-to-speech/<voice_id>", responses={200: _AUDIO, **ERRORS})
def text_to_speech(path: VoicePath, body: TextToSpeechRequest, query: TextToSpeechQuery) -> Response:
    """Speak `text` in the voice, in `output_format` (pcm_16000, ulaw_8000, mp3_44100_128...), sent as it is made."""
    return _audio(path.voice_id, body, query)


@bp.post("/text-to-speech/<voice_id>/stream", responses={200: _AUDIO, **ERRORS})
def text_to_speech_stream(path: VoicePath, body: TextToSpeechRequest, query: TextToSpeechQuery) -> Response:
    """The same as /v1/text-to-speech/{voice_id}: the audio streamed as it is made."""
    return _audio(path.voice_id, body, query)


def http_alignment(timing: CharTiming, offset_samples: int) -> dict[str, Any] | None:
    """Character timing as HTTP answers it: seconds from the start of the request's audio."""
    if not timing:
        return None
    offset = offset_samples / SAMPLE_RATE
    starts = [round(offset + ms / 1000, 3) for ms in timing.starts_ms]
    ends = [round(start + ms / 1000, 3) for start, ms in zip(starts, timing.durations_ms, strict=True)]
    return HttpAlignment(
        characters=timing.chars, character_start_times_seconds=starts, character_end_times_seconds=ends
    ).model_dump()


def timed_pieces(job: Job, client: ClientConnection | None, fmt: OutputFormat) -> Iterator[dict[str, Any]]:
    """The job's audio in `fmt`, chunk by chunk, each with the timing of the characters it carries: the text as
    written across the whole audio, each segment's said text across its own."""
    stored = jobs.get_job(job.id, with_segments=True)
    params = SynthesisParams.model_validate(stored.params)
    expected = [params.expected_samples(seg.text, seg.pause_ms) for seg in stored.segments]
    aligner = UtteranceAligner(stored.text, [seg.text for seg in stored.segments], expected, SAMPLE_RATE)
    encoder = fmt.encoder()
    offset = 0
    try:
        for chunk in job_chunks(job.id, job.segments_total, client=client):
            samples = len(chunk.pcm) // SAMPLE_WIDTH
            timed = aligner.chunk(chunk.cursor.segment, samples, chunk.last, chunk.marks)
            yield {
                "audio_base64": base64.b64encode(encoder.chunk(chunk.pcm)).decode(),
                "alignment": http_alignment(timed.written, offset),
                "normalized_alignment": http_alignment(timed.said, offset),
                "alignment_source": timed.source,
            }
            offset += samples
        if tail := encoder.finish():
            yield {"audio_base64": base64.b64encode(tail).decode(), "alignment": None, "normalized_alignment": None}
    finally:
        encoder.close()


@bp.post("/text-to-speech/<voice_id>/stream/with-timestamps", responses={200: _TIMED_LINES, **ERRORS})
def text_to_speech_stream_timed(path: VoicePath, body: TextToSpeechRequest, query: TextToSpeechQuery) -> Response:
    """The audio with character timing, one JSON object per line as each piece of audio is made: `audio_base64`,
    `alignment` (the text as written) and `normalized_alignment` (as said), each `characters` with their
    `character_start_times_seconds` and `character_end_times_seconds` from the start of the audio."""
    fmt = _query(query)

    def lines(job: Job, client: ClientConnection | None) -> Iterator[bytes]:
        for piece in timed_pieces(job, client, fmt):
            yield (json.dumps(piece) + "\n").encode()

    return stream_synthesis(_tts_request(path.voice_id, body), "application/x-ndjson", produce=lines)


@bp.post("/text-to-speech/<voice_id>/with-timestamps", responses={200: AudioWithTimestamps, **ERRORS})
def text_to_speech_timed(path: VoicePath, body: TextToSpeechRequest, query: TextToSpeechQuery) -> Response:
    """The whole audio (base64) with the timing of every character, in one JSON object once it is all made."""
    fmt = _query(query)

    def whole(job: Job, client: ClientConnection | None) -> Iterator[bytes]:
        audio, written, said, sources = b"", CharTiming(), CharTiming(), set()
        for piece in timed_pieces(job, client, fmt):
            audio += base64.b64decode(piece["audio_base64"])
            if piece["normalized_alignment"]:
                sources.add(piece["alignment_source"])
            written = written.joined(_timing(piece["alignment"]))
            said = said.joined(_timing(piece["normalized_alignment"]))
        answer = AudioWithTimestamps(
            audio_base64=base64.b64encode(audio).decode(),
            alignment=HttpAlignment.model_validate(http_alignment(written, 0)) if written else None,
            normalized_alignment=HttpAlignment.model_validate(http_alignment(said, 0)) if said else None,
            alignment_source=ATTENTION if sources == {ATTENTION} else ESTIMATE,
        )
        yield answer.model_dump_json().encode()

    return stream_synthesis(_tts_request(path.voice_id, body), "application/json", produce=whole)


def _timing(alignment: dict[str, Any] | None) -> CharTiming:
    """HTTP's seconds back to milliseconds (from the start of the audio)."""
    if alignment is None:
        return CharTiming()
    starts = alignment["character_start_times_seconds"]
    ends = alignment["character_end_times_seconds"]
    return CharTiming(
        list(alignment["characters"]),
        [round(s * 1000) for s in starts],
        [round((e - s) * 1000) for s, e in zip(starts, ends, strict=True)],
    )


# --- voices --------------------------------------------------------------------------------------------------------
def _voices(tenant: str) -> list[ElevenLabsVoice]:
    catalog = VoiceCatalog.of(tenant)
    voices = [ElevenLabsVoice(voice_id=name, name=name, category="premade") for name in catalog.builtin]
    voices += [
        ElevenLabsVoice(voice_id=alias, name=alias, category="premade", labels={"alias_of": voice})
        for alias, voice in catalog.aliases.items()
    ]
    voices += [
        ElevenLabsVoice(voice_id=v.id, name=v.name, category="cloned", description=v.description or None)
        for v in catalog.saved
    ]
    return voices


@bp.get("/voices", responses={200: ElevenLabsVoices})
def list_voices() -> Response:
    """The voices `voice_id` may name, in ElevenLabs' shape: built-in speakers and aliases (`premade`) and the
    tenant's saved voices (`cloned`)."""
    return json_model(ElevenLabsVoices(voices=_voices(caller().tenant)))


@bp.get("/voices/<voice_id>", responses={200: ElevenLabsVoice, 404: ErrorResponse})
def get_voice(path: VoicePath) -> Response:
    """One voice, as /v1/voices lists it."""
    for voice in _voices(caller().tenant):
        if voice.voice_id == path.voice_id:
            return json_model(voice)
    raise NotFound(f"A voice with voice_id {path.voice_id!r} was not found.")


# --- the WebSockets --------------------------------------------------------------------------------------------------
# Each path twice: the WebSocket itself, and a plain GET, answered 426 (werkzeug matches an upgrade only to a rule
# that says `websocket`, and anything else only to one that does not).
@sockets.route("/<voice_id>/stream-input", websocket=True)
@sockets.route("/<voice_id>/stream-input")
def stream_input(voice_id: str) -> Response:
    """ElevenLabs' single-context socket (api/agent_socket.py)."""
    return agent_socket.serve(voice_id, multi=False)


@sockets.route("/<voice_id>/multi-stream-input", websocket=True)
@sockets.route("/<voice_id>/multi-stream-input")
def multi_stream_input(voice_id: str) -> Response:
    """ElevenLabs' multi-context socket (api/agent_socket.py)."""
    return agent_socket.serve(voice_id, multi=True)
