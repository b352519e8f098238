"""ElevenLabs' `output_format` values (`codec_samplerate[_bitrate]`: pcm_16000, ulaw_8000, mp3_44100_128...) and
their encoders, fed the farm's 24 kHz PCM chunk by chunk.

A voice agent's audio is sent chunk by chunk, each with the timing of the characters it carries, so its encoder
answers each chunk with the bytes that chunk makes at once: raw PCM is resampled by soxr's streaming resampler (its
state carried from chunk to chunk: no clicks at the joins, and the whole stream as long as one resampling of all of
it), G.711 (u-law, A-law) is that PCM companded; MP3 and Opus go through one ffmpeg process per stream
(api/encoding.py's flags), whose bytes leave with the chunk they are ready by."""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import threading
from dataclasses import dataclass
from typing import Final

import numpy as np
import soxr

from shared.audio import SAMPLE_RATE
from shared.errors import InvalidInput

PCM_RATES: Final = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_FORMATS: Final = ("22050_32", "24000_48", "44100_32", "44100_64", "44100_96", "44100_128", "44100_192")
OPUS_BITRATES: Final = (32, 64, 96, 128, 192)
OUTPUT_FORMATS: Final[tuple[str, ...]] = (
    *(f"pcm_{rate}" for rate in PCM_RATES),
    "ulaw_8000",
    "alaw_8000",
    *(f"mp3_{rate_bitrate}" for rate_bitrate in MP3_FORMATS),
    *(f"opus_48000_{bitrate}" for bitrate in OPUS_BITRATES),
)
DEFAULT_OUTPUT_FORMAT: Final = "mp3_44100_128"
_NAME = re.compile(r"^(pcm|ulaw|alaw|mp3|opus)_(\d+)(?:_(\d+))?$")


@dataclass(frozen=True)
class OutputFormat:
    codec: str  # pcm, ulaw, alaw, mp3, opus
    rate: int
    kbps: int | None = None

    @property
    def media_type(self) -> str:
        if self.codec == "pcm":
            return f"audio/pcm;rate={self.rate};channels=1;encoding=s16le"
        return {"ulaw": "audio/basic", "alaw": "audio/x-alaw-basic", "mp3": "audio/mpeg", "opus": "audio/ogg"}[
            self.codec
        ]

    def encoder(self) -> ChunkEncoder:
        if self.codec in ("mp3", "opus"):
            return FfmpegChunks(self)
        return PcmChunks(self)


def output_format(name: str) -> OutputFormat:
    """The format an `output_format` names; 400 naming the ones there are for any other."""
    match = _NAME.match(name)
    if name not in OUTPUT_FORMATS or match is None:
        raise InvalidInput(
            f"output_format {name!r} is not offered; use one of: {', '.join(OUTPUT_FORMATS)}",
            details={"supported": list(OUTPUT_FORMATS)},
        )
    codec, rate, kbps = match.groups()
    return OutputFormat(codec, int(rate), int(kbps) if kbps else None)


class ChunkEncoder:
    """Encodes one stream of 24 kHz 16-bit PCM chunks: `chunk` returns what each makes now, `finish` the rest."""

    def chunk(self, pcm: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release what it holds (an ffmpeg process), however the stream ended."""


class PcmChunks(ChunkEncoder):
    """Raw PCM at any rate, or G.711 at 8 kHz."""

    def __init__(self, fmt: OutputFormat) -> None:
        self.fmt = fmt
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, fmt.rate, 1, dtype="int16", quality="HQ")

    def _encode(self, samples: np.ndarray) -> bytes:
        if self.fmt.codec == "ulaw":
            return ulaw(samples).tobytes()
        if self.fmt.codec == "alaw":
            return alaw(samples).tobytes()
        return samples.astype("<i2").tobytes()

    def chunk(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self.fmt.rate == SAMPLE_RATE:
            return self._encode(samples)
        return self._encode(self._resampler.resample_chunk(samples, last=False))

    def finish(self) -> bytes:
        if self.fmt.rate == SAMPLE_RATE:
            return b""
        return self._encode(self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True))


_ULAW_SEGMENT_ENDS: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def ulaw(samples: np.ndarray) -> np.ndarray:
    """ITU-T G.711 u-law of 16-bit samples (14-bit magnitude, biased, eight segments, all bits inverted)."""
    x = samples.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), 8159) + 0x21
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude)
    value = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    value = np.where(segment >= 8, 0x7F, value)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


_ALAW_SEGMENT_ENDS: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def alaw(samples: np.ndarray) -> np.ndarray:
    """ITU-T G.711 A-law of 16-bit samples (13-bit magnitude, eight segments, even bits inverted)."""
    x = samples.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    magnitude = np.where(x >= 0, x, -x - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    shift = np.where(segment < 2, 1, segment)
    value = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    value = np.where(segment >= 8, 0x7F, value)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


_FFMPEG_OUTPUT: Final = {
    "mp3": ("-c:a", "libmp3lame", "-f", "mp3", "-write_xing", "0", "-id3v2_version", "0"),
    "opus": ("-c:a", "libopus", "-frame_duration", "20", "-page_duration", "20000", "-f", "ogg"),
}
# How long a chunk waits for ffmpeg's bytes of it: an encoder holds a frame or two back, which later chunks carry.
_SETTLE_SECONDS: Final = 0.02


class FfmpegChunks(ChunkEncoder):
    """MP3 or Ogg Opus from one ffmpeg process: PCM in through its stdin, bytes out through a reader thread."""

    def __init__(self, fmt: OutputFormat) -> None:
        command = [
            "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error",
            "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-vn",
            "-ar", str(fmt.rate), "-b:a", f"{fmt.kbps}k", *_FFMPEG_OUTPUT[fmt.codec], "-flush_packets", "1", "pipe:1",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0
        )
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="agent-audio-encoder", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            while data := self._process.stdout.read(65536):
                self._out.put(data)
        self._out.put(None)

    def _ready(self, wait: float) -> bytes:
        """What ffmpeg has written, waiting up to `wait` seconds for its first bytes."""
        parts = []
        while True:
            try:
                data = self._out.get(timeout=wait) if wait > 0 else self._out.get_nowait()
            except queue.Empty:
                break
            if data is None:
                self._out.put(None)  # the end stays for `finish`
                break
            parts.append(data)
            wait = 0.0
        return b"".join(parts)

    def chunk(self, pcm: bytes) -> bytes:
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(pcm)
        return self._ready(_SETTLE_SECONDS)

    def finish(self) -> bytes:
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        parts = []
        while (data := self._out.get(timeout=30)) is not None:
            parts.append(data)
        self._out.put(None)
        return b"".join(parts)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        with contextlib.suppress(OSError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        self._reader.join(5)
