"""How audio and events are framed on the wire: WAV headers and Server-Sent Events.

Low level on purpose: it imports no Redis, no SQL and no request state, so the request models (which need the
audio formats) and anything else can use it without loading the delivery machinery.
"""

from __future__ import annotations

import io
import json
import struct
import wave
from typing import Any

from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH

STREAMING_DATA_SIZE = 0xFFFFFFFF - 36  # "unknown length": players read until the connection ends


def streaming_wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte PCM WAV header for a stream whose length is not known yet."""
    byte_rate = sample_rate * SAMPLE_WIDTH
    return (
        b"RIFF"
        + struct.pack("<I", STREAMING_DATA_SIZE + 36)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, SAMPLE_WIDTH, 16)
        + b"data"
        + struct.pack("<I", STREAMING_DATA_SIZE)
    )


def wav_file(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A complete WAV file: the header states the true length of `pcm` (16-bit mono)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def sse_event(data: dict[str, Any], event: str | None = None, event_id: str | None = None) -> bytes:
    """One Server-Sent Event: `data` as compact JSON on one line, with its `event` name and `id` when given
    (OpenAI's speech events have neither: their type is inside the data)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()
