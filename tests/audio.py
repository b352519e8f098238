"""Reading what the API sends: streamed WAVs and Server-Sent Events."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import requests

HEADER_BYTES = 44


def parse_stream_wav(data: bytes) -> tuple[dict, bytes]:
    """Check a streamed WAV's header and return (format, pcm)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", "not a RIFF/WAVE file"
    assert data[12:16] == b"fmt ", "no fmt chunk"
    _size, fmt, channels, rate, byte_rate, align, bits = struct.unpack("<IHHIIHH", data[16:36])
    assert data[36:40] == b"data", "no data chunk"
    return {
        "format": fmt,
        "channels": channels,
        "rate": rate,
        "byte_rate": byte_rate,
        "align": align,
        "bits": bits,
    }, data[HEADER_BYTES:]


def read_wav(data: bytes) -> tuple[int, int, bytes]:
    """(sample rate, frames, pcm) of a complete WAV file, read with the standard library."""
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), w.getnframes(), w.readframes(w.getnframes())


@dataclass
class Event:
    event: str
    id: str | None
    data: dict

    @property
    def pcm(self) -> bytes:
        return base64.b64decode(self.data["pcm_s16le_base64"])


def sse_events(response: requests.Response) -> Iterator[Event]:
    fields: dict[str, str] = {}
    for raw in response.iter_lines(decode_unicode=True):
        if raw:
            key, _, value = raw.partition(": ")
            fields[key] = value
            continue
        if fields:
            yield Event(fields.get("event", "message"), fields.get("id"), json.loads(fields.get("data", "{}")))
            fields = {}
