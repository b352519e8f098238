"""Section `formats`: the response encoder (api/encoding.py) alone, no farm, fed synthetic PCM chunks of the sizes the
farm sends (a first chunk of DEFAULT_STREAM_CHUNK_SIZE audio tokens, then chunks doubling up to 4 times that).

Per format: the time from the first PCM chunk handed to the encoder to the first encoded bytes out, and to the first
2 kB out (past any container header: a quarter of a second of audio at the lowest bitrate), while the source holds
back its second chunk as the farm does while it synthesizes; then how fast a whole 10 s response encodes (audio
seconds per wall second) and its bitrate.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from api.encoding import FORMATS, encode
from shared.audio import SAMPLE_RATE

SAMPLES_PER_TOKEN = 1114  # an audio token is about 46.4 ms of 24 kHz audio
FIRST_CHUNK_TOKENS = 20  # DEFAULT_STREAM_CHUNK_SIZE
AUDIO_BYTES_MARK = 2000


def _speech_like(samples: int, seed: int = 0) -> bytes:
    """Noise shaped by a slow envelope (what the dev model produces is noise too): no codec gets it for free."""
    rng = np.random.default_rng(seed)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(samples) / SAMPLE_RATE)
    return (rng.normal(0, 4000, samples) * envelope).clip(-32768, 32767).astype("<i2").tobytes()


def farm_chunks(pcm: bytes) -> list[bytes]:
    first = FIRST_CHUNK_TOKENS * SAMPLES_PER_TOKEN * 2
    out, at, size = [], 0, first
    while at < len(pcm):
        out.append(pcm[at : at + size])
        at, size = at + size, min(size * 2, 4 * first)
    return out


def first_bytes(fmt: str, synthesis_wait: float) -> tuple[float, float]:
    """(ms to the first bytes, ms to the first AUDIO_BYTES_MARK bytes) after the first chunk was handed over, the
    first chunk coming `synthesis_wait` seconds after the response started (its encoder starts meanwhile, as in the
    farm, where the first chunk takes the workers a while). WAV's header leaves before any chunk: 0."""
    chunks = farm_chunks(_speech_like(5 * SAMPLE_RATE))
    handed: list[float] = []
    release = threading.Event()

    def source() -> Iterator[bytes]:
        time.sleep(synthesis_wait)
        handed.append(time.perf_counter())
        yield chunks[0]
        release.wait(10)  # the farm is synthesizing the next chunk
        yield from chunks[1:]

    stream = encode(source(), fmt)
    received, first_at, mark_at = 0, None, None
    try:
        for data in stream:
            now = time.perf_counter()
            received += len(data)
            first_at = first_at or now
            if received >= AUDIO_BYTES_MARK:
                mark_at = now
                break
    finally:
        release.set()
        stream.close()
    assert first_at is not None and mark_at is not None
    return max(0.0, first_at - handed[0]) * 1000, max(0.0, mark_at - handed[0]) * 1000


def whole_response(fmt: str, seconds: float = 10.0) -> tuple[float, float]:
    """(audio seconds encoded per wall second, kbit/s) for a whole response of `seconds` of audio."""
    pcm = _speech_like(int(seconds * SAMPLE_RATE), seed=1)
    started = time.perf_counter()
    size = sum(len(data) for data in encode(farm_chunks(pcm), fmt))
    return seconds / (time.perf_counter() - started), size * 8 / seconds / 1000


def formats(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    repeats = 5 if quick else 15
    rows = []
    for fmt in FORMATS:
        firsts, marks = zip(*(first_bytes(fmt, 0.3) for _ in range(repeats)), strict=True)
        cold, _ = zip(*(first_bytes(fmt, 0.0) for _ in range(repeats)), strict=True)
        speed, kbps = whole_response(fmt)
        rows.append(
            {
                "format": fmt,
                "first bytes ms (median)": statistics.median(firsts),
                "first bytes ms (max)": max(firsts),
                f"first {AUDIO_BYTES_MARK} B ms (median)": statistics.median(marks),
                "with ffmpeg start-up ms (median)": statistics.median(cold),
                "encode x real time": speed,
                "kbit/s": kbps,
            }
        )
    notes = [
        f"{repeats} runs per format; first chunk {FIRST_CHUNK_TOKENS} tokens ({FIRST_CHUNK_TOKENS * SAMPLES_PER_TOKEN}"
        " samples) 0.3 s after the response starts (the encoder starts meanwhile, as in the farm), the next one held"
        " back until the encoder has answered; 'with ffmpeg start-up': the first chunk ready at once; wav and pcm"
        " need no encoder",
    ]
    return "Formats: first encoded bytes after the first PCM chunk, and encoding speed", rows, {"notes": notes}
