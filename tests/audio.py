"""Reading what the API sends: streamed WAVs and Server-Sent Events."""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import requests

HEADER_BYTES = 44


def xtts_samples(tokens: int) -> int:
    """Samples XTTS's decoder makes of one segment of `tokens` audio tokens: x4 to mel frames, 22.05 -> 24 kHz, 256
    per frame. What a request with min_new_tokens = max_new_tokens = `tokens` must deliver, counted independently of
    the farm's own bookkeeping."""
    return math.floor(tokens * 4 * 24000 / 22050) * 256


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


class HasUrl(Protocol):
    def url(self, path: str) -> str: ...


@dataclass
class ResumingListener:
    """A client of GET /jobs/{id}/stream on its own thread that reconnects with its cursor (the last SSE id) whenever
    the stream breaks off (an API restarting, Redis down), and can read at the pace of playback (`realtime`)."""

    farm: HasUrl  # a tools.localfarm.Farm, or anything with `url(path)`
    job_id: str
    realtime: bool = False
    # An `error` event ends the stream, unless it is to be retried like a broken connection (a fault test: Redis
    # down for a while is an error for the listener now, and its cursor resumes it later).
    retry_errors: bool = False
    audio: list[Event] = field(default_factory=list)
    cursors: list[str | None] = field(default_factory=list)  # the cursor each connection resumed from
    last: Event | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            cursor = self.audio[-1].id if self.audio else None
            try:
                with requests.get(
                    self.farm.url(f"/jobs/{self.job_id}/stream"),
                    params={"cursor": cursor} if cursor else {},
                    stream=True,
                    timeout=60,
                ) as response:
                    if response.status_code == 200:
                        self.cursors.append(cursor)
                        if self._read(response):
                            return
            except requests.RequestException:
                pass
            time.sleep(0.2)  # broken off or refused for now: reconnect with the cursor

    def _read(self, response: requests.Response) -> bool:
        """Take the stream's events; True once it has ended (`end` or `error`)."""
        for event in sse_events(response):
            self.last = event
            if event.event == "audio":
                self.audio.append(event)
                if self.realtime:
                    time.sleep(event.data["samples"] / 24000)
            elif event.event == "end" or (event.event == "error" and not self.retry_errors):
                return True
        return False

    def complete(self, tokens: int, segments: int = 1, timeout: float = 240) -> None:
        """The stream ended with `end`, every chunk in order once, and all the audio of `segments` segments of
        `tokens` audio tokens each arrived."""
        self.thread.join(timeout)
        assert self.last is not None and self.last.event == "end", self.last
        # An event's id is (segment, seq, samples): where its chunk ends in its segment's audio. In order by
        # (segment, samples): after a failover, a chunk made again may carry a lower number than one before it.
        ids = [tuple(map(int, (e.id or "").split("-"))) for e in self.audio]
        places = [(segment, end) for segment, _seq, end in ids]
        assert places == sorted(places) and len(set(places)) == len(places), "a chunk out of order or delivered twice"
        for segment in range(segments):
            ends = [0] + [end for seg, _seq, end in ids if seg == segment]
            chunks = [len(e.pcm) // 2 for e in self.audio if int((e.id or "").split("-")[0]) == segment]
            # Every sample once: each chunk is the segment's audio from where the one before it ended. (Chunk
            # numbers need not follow on: after a failover, the chunks made again need not end where the lost
            # ones did, and a listener goes on from the sample it had reached.)
            assert chunks == [b - a for a, b in itertools.pairwise(ends)], f"a gap or overlap in {segment}"
        assert sum(len(e.pcm) for e in self.audio) // 2 == segments * xtts_samples(tokens), "audio missing"


# How ffmpeg is told what each response_format is (never left to guess: a short ADTS stream fails its probe).
DEMUXERS = {
    "wav": ["-f", "wav"],
    "pcm": ["-f", "s16le", "-ar", "24000", "-ac", "1"],
    "mp3": ["-f", "mp3"],
    "opus": ["-f", "ogg"],
    "aac": ["-f", "aac"],
    "flac": ["-f", "flac"],
}
CODECS = {"wav": "pcm_s16le", "pcm": "pcm_s16le", "mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac"}
# Encoder delay that the container cannot signal (ADTS, and MP3 without a LAME header, which a stream cannot have):
# decoders output it as leading silence. Ogg Opus signals its pre-skip, FLAC has none.
PRIMING = {"wav": 0, "pcm": 0, "mp3": 576 + 529, "aac": 1024, "opus": 0, "flac": 0}
# One codec frame, in samples at 24 kHz: the most padding the last frame may add.
FRAME = {"wav": 0, "pcm": 0, "mp3": 1152, "aac": 1024, "opus": 480, "flac": 4608}


def flac_total_samples(data: bytes) -> int:
    """The total samples a FLAC file's STREAMINFO states (0: unknown), read as the FLAC format lays it out: "fLaC",
    a 4-byte block header, then 34 bytes whose bits 80 to 143 hold rate (20), channels (3), bits (5), total (36)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO is not the first metadata block"
    packed = int.from_bytes(data[8 + 10 : 8 + 18], "big")
    return packed & (2**36 - 1)


@dataclass(frozen=True)
class Mp3Info:
    """What the Xing/Info header of an MP3's first frame says, with its LAME tag's encoder delay and padding."""

    frames: int  # audio frames after this one
    samples_per_frame: int
    delay: int
    padding: int

    @property
    def samples(self) -> int:
        """The audio the header announces: what a gapless decoder outputs."""
        return self.frames * self.samples_per_frame - self.delay - self.padding


def mp3_info(data: bytes) -> Mp3Info | None:
    """The first frame's Xing/Info header and LAME tag, or None when it has none (read by hand: the frame header
    gives the side information's size, which the Xing tag follows)."""
    header = int.from_bytes(data[:4], "big")
    assert header >> 21 == 0x7FF, "no MP3 frame at the start"
    mpeg1, mono, crc = (header >> 19) & 3 == 3, (header >> 6) & 3 == 3, not (header >> 16) & 1
    at = 4 + (2 if crc else 0) + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))
    if data[at : at + 4] not in (b"Xing", b"Info"):
        return None
    flags = int.from_bytes(data[at + 4 : at + 8], "big")
    assert flags & 1, "the Xing header has no frame count"
    frames = int.from_bytes(data[at + 8 : at + 12], "big")
    lame = at + 12 + (4 if flags & 2 else 0) + (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
    delay_padding = int.from_bytes(data[lame + 21 : lame + 24], "big")  # 12 bits each, after the encoder's name
    return Mp3Info(frames, 1152 if mpeg1 else 576, delay_padding >> 12, delay_padding & 0xFFF)


def codec_of(data: bytes, fmt: str) -> str:
    """The codec ffprobe finds in `data` (read as `fmt`'s container)."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", *DEMUXERS[fmt], "-i", "pipe:0", "-show_entries", "stream=codec_name", "-of", "json"],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
    )
    streams = json.loads(probe.stdout)["streams"]
    assert len(streams) == 1, streams
    return str(streams[0]["codec_name"])


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Every sample of an encoded response, decoded completely (not a duration estimated from the bitrate),
    as 24 kHz mono int16. Fails on any decoding error."""
    to_pcm = ["-f", "s16le", "-ar", "24000", "-ac", "1", "pipe:1"]
    done = subprocess.run(
        ["ffmpeg", "-v", "error", *DEMUXERS[fmt], "-i", "pipe:0", *to_pcm],
        check=False,
        input=data,
        capture_output=True,
        timeout=60,
    )
    errors = done.stderr.decode(errors="replace")
    if fmt == "wav" and data[40:44] == b"\xdb\xff\xff\xff":
        # A streamed WAV says "unknown length" (0xFFFFFFFF - 36): ffmpeg calls its last packet short of it "corrupt".
        errors = errors.replace("pipe:0: corrupt input packet in stream 0\n", "")
    assert done.returncode == 0 and not errors, errors
    return np.frombuffer(done.stdout, dtype="<i2")


def assert_duration_matches(data: bytes, fmt: str, samples: int) -> np.ndarray:
    """The decoded audio lasts `samples` (the job's exact audio), give or take what the codec adds: its encoder delay
    when the container cannot signal it, and the padding of one last frame. Nothing may be missing (no lost tail)."""
    assert codec_of(data, fmt) == CODECS[fmt]
    decoded = decode(data, fmt)
    extra = len(decoded) - samples
    assert 0 <= extra <= PRIMING[fmt] + FRAME[fmt], (
        f"{fmt}: decoded {len(decoded)} samples for {samples} sent ({extra:+d}; allowed 0 to "
        f"{PRIMING[fmt] + FRAME[fmt]})"
    )
    return decoded


@dataclass(frozen=True)
class Fidelity:
    """How closely decoded audio matches the PCM the encoder was fed, once the codec's delay is taken out."""

    lag: int  # samples of decoded audio before the reference's first sample (the encoder delay left in)
    snr_db: float  # of the aligned decoded audio against the reference (inf: identical samples)


def fidelity(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 4096) -> Fidelity:
    """Aligns `decoded` on `reference` by cross-correlation (the lag, 0 to `max_lag`, where they correlate best),
    then measures the SNR of the overlapping part over the whole reference: missing samples count as noise, so
    audio that is silent, shifted, cut short or of another signal scores low, whatever its length."""
    ref = reference.astype(np.float64)
    dec = decoded.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(dec))))
    correlation = np.fft.irfft(np.fft.rfft(dec, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(correlation[: max_lag + 1]))
    aligned = np.zeros_like(ref)
    piece = dec[lag : lag + len(ref)]
    aligned[: len(piece)] = piece
    noise = float(np.sum((ref - aligned) ** 2))
    signal = float(np.sum(ref**2))
    return Fidelity(lag, math.inf if noise == 0 else 10 * math.log10(signal / noise))
