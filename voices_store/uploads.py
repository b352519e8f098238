"""Decoding reference audio uploads (WAV, MP3, FLAC, OGG/Opus/Vorbis, M4A/AAC, WebM/Opus, any rate and channel
count) into what XTTS's cloning expects: mono float32 at 22.05 kHz.

Uploads are hostile input, decoded inside the API process's request thread, so the decoder is boxed in:

- ffmpeg runs as a child process reading the upload from stdin only. Its protocol whitelist admits nothing but the
  pipe (plus ffmpeg's own seekable cache of that pipe for MP4), so a playlist or script hidden in an upload cannot
  make it open URLs or local files: ffmpeg auto-detects HLS and would otherwise fetch every address inside.
- The container is recognised here from its magic bytes and forced with `-f`; ffmpeg's `-format_whitelist` is a
  second lock (on ffmpeg 5.1 it does not narrow probing: it only refuses the probed winner when it is not listed).
- Decoding stops at the duration bound while it runs (`-t` on ffmpeg's side, a byte cap on the output we read), so a
  small file that decodes to hours costs milliseconds and under a megabyte, never its decoded size.
- A wall-clock limit kills and reaps the process; all three pipes are served by one selector loop, so no pipe can
  fill up and deadlock the exchange.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import selectors
import subprocess
import time
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import IO, cast

import numpy as np

from shared.tenants import DEFAULT_TENANT
from voices_store.errors import (
    DecodeTimeout,
    NotAudio,
    ReferenceTooLong,
    TooMuchReferenceAudio,
    UnusableAudio,
    UploadTooLarge,
)

log = logging.getLogger(__name__)

CLONE_SAMPLE_RATE = 22050
# XTTS refuses references under 0.33 s; under half a second of actual sound a voice cannot be learned.
MIN_SOUND_SECONDS = 0.5
SILENCE_THRESHOLD_DBFS = -50.0
# Loudness is measured over 10 ms blocks; pauses shorter than 100 ms between sounds count as sound, as with pydub's
# detect_nonsilent(min_silence_len=100) that this replaces: speech is full of such short gaps.
LOUDNESS_BLOCK_SECONDS = 0.01
SILENCE_BRIDGE_SECONDS = 0.1
# Lossy codecs pad their last frame (AAC adds about 20 ms, MP3 without a gapless header up to 50 ms), so a recording
# cut at exactly the limit must not be refused for its padding.
DURATION_TOLERANCE_SECONDS = 0.05
# Decoding 20 s of any supported format takes well under a second on one core; more means a pathological input.
DECODE_TIME_LIMIT_SECONDS = 10.0
REQUEST_DECODE_TIME_LIMIT_SECONDS = 30.0

FFMPEG = "ffmpeg"
# ffmpeg demuxer names (the first name of each demuxer; `mov` covers mp4/m4a/3gp, `matroska` covers webm).
AUDIO_DEMUXERS = ("wav", "mp3", "flac", "ogg", "mov", "matroska", "aac")
_BYTES_PER_SAMPLE = 2  # s16le
_CHUNK = 65536  # bytes per read or write on a pipe
_STDERR_TAIL_BYTES = 4096
_SUPPORTED = "WAV, MP3, FLAC, OGG/Opus/Vorbis, M4A/AAC, WebM/Opus"


@dataclass(frozen=True)
class Reference:
    filename: str
    samples: np.ndarray  # float32 mono at CLONE_SAMPLE_RATE
    sound_seconds: float

    @property
    def seconds(self) -> float:
        return len(self.samples) / CLONE_SAMPLE_RATE


# --- recognising the container ----------------------------------------------------------------------------------


def _id3v2_end(data: bytes) -> int:
    """Offset just past any ID3v2 tags at the start (MP3s carry them; some FLACs too); ffmpeg skips them itself."""
    offset = 0
    while data[offset : offset + 3] == b"ID3" and len(data) >= offset + 10:
        size_bytes = data[offset + 6 : offset + 10]
        if any(b & 0x80 for b in size_bytes):  # sizes are "syncsafe": 7 bits per byte
            break
        size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
        footer = 10 if data[offset + 5] & 0x10 else 0
        offset += 10 + size + footer
    return offset


def _mpeg_audio_demuxer(header: bytes) -> str | None:
    """`mp3` for a valid MPEG audio frame header, `aac` for an ADTS header, None for anything else."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    if header[1] & 0xF6 == 0xF0:  # 12-bit sync, layer bits 00: ADTS
        return "aac"
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate, rate = header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or layer == 0 or bitrate == 15 or rate == 3:  # reserved values: random bytes, not a frame
        return None
    return "mp3"


def sniff_demuxer(data: bytes) -> str | None:
    """The ffmpeg demuxer for an upload recognised by its magic bytes, or None when it is none of the accepted kinds.

    Forcing the demuxer means ffmpeg never probes, so no playlist/script/image demuxer ever looks at an upload.
    """
    head = data[:12]
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska and WebM
        return "matroska"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):  # ISO BMFF / QuickTime top-level boxes
        return "mov"
    offset = _id3v2_end(data)
    if data[offset : offset + 4] == b"fLaC":
        return "flac"
    return _mpeg_audio_demuxer(data[offset : offset + 4])


# --- running ffmpeg under limits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoundedRun:
    """What a child process wrote, and how it ended."""

    stdout: bytes
    stderr_tail: bytes
    returncode: int | None  # None when it was killed (time limit or output cap)
    timed_out: bool
    output_capped: bool  # it wrote more than max_output_bytes; reading stopped there


def ffmpeg_command(demuxer: str, max_seconds: float) -> list[str]:
    """The ffmpeg command line decoding stdin (in the given container) to raw mono 22.05 kHz s16le on stdout."""
    if demuxer not in AUDIO_DEMUXERS:
        raise ValueError(f"demuxer {demuxer!r} is not one of {AUDIO_DEMUXERS}")
    # The mov demuxer must seek (an M4A's index often sits after its audio): ffmpeg's cache protocol makes the pipe
    # seekable, and an unlimited read-ahead lets it reach the index. It buffers at most the upload itself.
    source = ["-read_ahead_limit", "-1", "-i", "cache:pipe:0"] if demuxer == "mov" else ["-i", "pipe:0"]
    protocols = "cache,pipe" if demuxer == "mov" else "pipe"
    return [
        FFMPEG,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        protocols,
        "-format_whitelist",
        ",".join(AUDIO_DEMUXERS),
        "-f",
        demuxer,
        *source,
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-t",
        f"{_decode_seconds(max_seconds):.3f}",
        "-f",
        "s16le",
        "-c:a",
        "pcm_s16le",
        "-ac",
        "1",
        "-ar",
        str(CLONE_SAMPLE_RATE),
        "pipe:1",
    ]


def _decode_seconds(max_seconds: float) -> float:
    """How far ffmpeg decodes: just past the limit, so an over-long input is told apart from one that fits."""
    return max(max_seconds, 0.0) + DURATION_TOLERANCE_SECONDS + 0.1


def _max_samples(max_seconds: float) -> int:
    return math.floor((max(max_seconds, 0.0) + DURATION_TOLERANCE_SECONDS) * CLONE_SAMPLE_RATE)


class _Pipes:
    """Feeds a child's stdin and drains its stdout and stderr from one selector loop: no thread, no deadlock."""

    def __init__(self, proc: subprocess.Popen[bytes], data: bytes, max_output_bytes: int) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all three are PIPE
        self.stdin, self.stdout, self.stderr = proc.stdin, proc.stdout, proc.stderr
        self.data, self.written = memoryview(data), 0
        self.max_output_bytes = max_output_bytes
        self.output: list[bytes] = []
        self.output_size = 0
        self.stderr_tail = b""
        self.selector = selectors.DefaultSelector()
        for stream, events in (
            (self.stdin, selectors.EVENT_WRITE),
            (self.stdout, selectors.EVENT_READ),
            (self.stderr, selectors.EVENT_READ),
        ):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, events)
        if not data:
            self._finish(self.stdin)

    @property
    def open(self) -> bool:
        return bool(self.selector.get_map())

    @property
    def capped(self) -> bool:
        return self.output_size > self.max_output_bytes

    def serve(self, timeout: float) -> None:
        """One round: whatever the pipes are ready for within `timeout` seconds."""
        for key, _ in self.selector.select(timeout):
            stream = cast(IO[bytes], key.fileobj)
            if stream is self.stdin:
                self._write(stream)
            else:
                self._read(stream)

    def _write(self, stream: IO[bytes]) -> None:
        try:
            self.written += os.write(stream.fileno(), self.data[self.written : self.written + _CHUNK])
        except BlockingIOError:
            return
        except BrokenPipeError:  # the child stopped reading (done, or failed): the rest is not needed
            self._finish(stream)
            return
        if self.written >= len(self.data):
            self._finish(stream)  # EOF tells ffmpeg the input is complete

    def _read(self, stream: IO[bytes]) -> None:
        try:
            chunk = os.read(stream.fileno(), _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self._finish(stream)
        elif stream is self.stdout:
            self.output.append(chunk)
            self.output_size += len(chunk)
        else:  # keep only the end of stderr: the error that matters comes last, and a flood must not pile up
            self.stderr_tail = (self.stderr_tail + chunk)[-_STDERR_TAIL_BYTES:]

    def _finish(self, stream: IO[bytes]) -> None:
        self.selector.unregister(stream)
        stream.close()

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self._finish(cast(IO[bytes], key.fileobj))
        self.selector.close()


def run_bounded(command: list[str], data: bytes, *, time_limit: float, max_output_bytes: int) -> BoundedRun:
    """Run `command` with `data` on its stdin; stop it at `time_limit` seconds or past `max_output_bytes` of stdout.

    The child is always killed if still running, and reaped, before this returns (or raises), so no process
    outlives the request, not even as a zombie.
    """
    deadline = time.monotonic() + time_limit
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True
    )
    try:
        pipes = _Pipes(proc, data, max_output_bytes)
        try:
            timed_out = _serve_until(pipes, proc, deadline)
        finally:
            pipes.close()
    finally:
        if proc.poll() is None:
            proc.kill()  # SIGKILL: ffmpeg only notes SIGTERM, and one blocked in open() would not even see it
        proc.wait()
    stopped = timed_out or pipes.capped
    return BoundedRun(
        b"".join(pipes.output), pipes.stderr_tail, None if stopped else proc.returncode, timed_out, pipes.capped
    )


def _serve_until(pipes: _Pipes, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Serves the pipes until the child is done with them, its output passes the cap, or the deadline comes.

    True when the deadline came first.
    """
    while pipes.open and not pipes.capped:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        pipes.serve(left)
    return False if pipes.capped else _wait(proc, deadline - time.monotonic())


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Waits for a child that closed its pipes; True when it is still running at the deadline."""
    try:
        proc.wait(timeout=max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        return True
    return False


# --- decoding one reference --------------------------------------------------------------------------------------


def decode_reference(
    filename: str, data: bytes, *, max_bytes: int, max_seconds: float, time_limit: float = DECODE_TIME_LIMIT_SECONDS
) -> Reference:
    """Decodes one uploaded recording and checks it can serve as a cloning reference.

    Raises UploadTooLarge, NotAudio, UnusableAudio (ReferenceTooLong when over `max_seconds`), DecodeTimeout when
    ffmpeg has not finished within `time_limit` seconds.
    """
    if not data:
        raise UnusableAudio(f"file {filename!r} is empty")
    if len(data) > max_bytes:
        raise UploadTooLarge(
            f"file {filename!r} is {len(data) / 2**20:.1f} MB; the limit is MAX_UPLOAD_MB={max_bytes // 2**20}"
        )
    demuxer = sniff_demuxer(data)
    if demuxer is None:
        raise _not_audio(filename)
    samples = _decode_pcm(filename, data, demuxer, max_seconds=max_seconds, time_limit=time_limit)
    return Reference(filename, samples, _check_sound(filename, samples))


def _not_audio(filename: str) -> NotAudio:
    return NotAudio(f"file {filename!r} is not audio that can be decoded ({_SUPPORTED})")


def _decode_pcm(filename: str, data: bytes, demuxer: str, *, max_seconds: float, time_limit: float) -> np.ndarray:
    """Mono float32 samples at CLONE_SAMPLE_RATE; never holds more than the limit's worth of decoded audio."""
    max_samples = _max_samples(max_seconds)
    run = run_bounded(
        ffmpeg_command(demuxer, max_seconds),
        data,
        time_limit=time_limit,
        max_output_bytes=max_samples * _BYTES_PER_SAMPLE,
    )
    if run.timed_out:
        raise DecodeTimeout(f"file {filename!r} could not be decoded within {time_limit:g} s")
    if run.output_capped or len(run.stdout) > max_samples * _BYTES_PER_SAMPLE:
        raise ReferenceTooLong(
            f"file {filename!r} is longer than {max_seconds:g} s; references are limited to "
            f"{max_seconds:g} s (XTTS uses at most the first 30 s)"
        )
    if run.returncode != 0:
        log.info("ffmpeg (%s) refused %r: %r", demuxer, filename, run.stderr_tail.decode(errors="replace")[-500:])
        raise _not_audio(filename)
    if len(run.stdout) < _BYTES_PER_SAMPLE:
        raise UnusableAudio(f"file {filename!r} holds no audio samples")
    samples = np.frombuffer(run.stdout, dtype="<i2", count=len(run.stdout) // _BYTES_PER_SAMPLE).astype(np.float32)
    samples *= np.float32(1 / 32768)  # in place: no second float copy
    return samples


# --- sound and silence -------------------------------------------------------------------------------------------


def sound_seconds(samples: np.ndarray, rate: int = CLONE_SAMPLE_RATE) -> float:
    """Seconds of sound: 10 ms blocks louder than SILENCE_THRESHOLD_DBFS, plus the short pauses between them."""
    block = max(1, round(rate * LOUDNESS_BLOCK_SECONDS))
    count = len(samples) // block
    if count == 0:
        return 0.0
    blocks = samples[: count * block].reshape(count, block)  # a view: no copy of the audio
    mean_square = np.einsum("ij,ij->i", blocks, blocks) / block
    loud = np.flatnonzero(mean_square > 10 ** (SILENCE_THRESHOLD_DBFS / 10))  # rms above the threshold, squared
    if loud.size == 0:
        return 0.0
    gaps = np.diff(loud) - 1
    bridged = int(gaps[(gaps > 0) & (gaps < round(SILENCE_BRIDGE_SECONDS / LOUDNESS_BLOCK_SECONDS))].sum())
    return (loud.size + bridged) * block / rate


def _check_sound(filename: str, samples: np.ndarray) -> float:
    seconds = sound_seconds(samples)
    if seconds == 0:
        raise UnusableAudio(f"file {filename!r} is silent (nothing above {SILENCE_THRESHOLD_DBFS:g} dBFS)")
    if seconds < MIN_SOUND_SECONDS:
        raise UnusableAudio(
            f"file {filename!r} has {seconds:.2f} s of sound; XTTS needs at least {MIN_SOUND_SECONDS} s"
        )
    return seconds


# --- a whole request's references --------------------------------------------------------------------------------


def decode_references(
    files: Iterable[tuple[str, bytes]],
    *,
    max_bytes: int,
    max_seconds_each: float,
    max_parts: int,
    max_total_seconds: float,
    time_limit: float = REQUEST_DECODE_TIME_LIMIT_SECONDS,
) -> list[Reference]:
    """Decodes the reference files of one request, (filename, bytes) pairs in order, under per-request caps.

    Stops at the first violation, before decoding anything more:
    - more than `max_parts` files raises TooMuchReferenceAudio: at once when `files` has a length, otherwise (a
      generator reading each upload when reached) on taking the first surplus file, which is never decoded;
    - a total duration over `max_total_seconds` raises TooMuchReferenceAudio too: each file is decoded only up to
      what is left of that total, so a request of many long parts never decodes more than the total in all;
    - `time_limit` bounds the decoding of the whole request (DecodeTimeout).
    Every error of decode_reference passes through for its file (a file over `max_seconds_each` keeps its
    ReferenceTooLong). The API would call it as, for example:

        decode_references(((f.filename or f"file {i + 1}", f.read()) for i, f in enumerate(files)),
                          max_bytes=settings.MAX_UPLOAD_MB * 2**20, max_seconds_each=settings.MAX_REFERENCE_SECONDS,
                          max_parts=..., max_total_seconds=...)
    """
    if isinstance(files, Sized) and len(files) > max_parts:
        raise _too_many_parts(max_parts)
    deadline = time.monotonic() + time_limit
    references: list[Reference] = []
    total = 0.0
    for filename, data in files:
        if len(references) == max_parts:
            raise _too_many_parts(max_parts)
        if time.monotonic() >= deadline:
            raise DecodeTimeout(f"the reference files could not be decoded within {time_limit:g} s")
        reference = _decode_within_total(
            filename,
            data,
            max_bytes=max_bytes,
            max_seconds_each=max_seconds_each,
            max_total_seconds=max_total_seconds,
            total_so_far=total,
            deadline=deadline,
        )
        references.append(reference)
        total += reference.seconds
    return references


def _too_many_parts(max_parts: int) -> TooMuchReferenceAudio:
    return TooMuchReferenceAudio(f"too many reference files: at most {max_parts} per request")


def _decode_within_total(
    filename: str,
    data: bytes,
    *,
    max_bytes: int,
    max_seconds_each: float,
    max_total_seconds: float,
    total_so_far: float,
    deadline: float,
) -> Reference:
    """One file of a request, decoded no further than both its own limit and what is left of the request's."""
    left = max_total_seconds - total_so_far
    limit = min(max_seconds_each, left)
    try:
        return decode_reference(
            filename, data, max_bytes=max_bytes, max_seconds=limit, time_limit=max(deadline - time.monotonic(), 0.0)
        )
    except ReferenceTooLong:
        if limit < max_seconds_each:  # the request's total ran out before this file's own limit did
            raise TooMuchReferenceAudio(
                f"the reference files add up to more than {max_total_seconds:g} s; "
                f"a request may carry at most {max_total_seconds:g} s of audio"
            ) from None
        raise


def references_hash(references: list[Reference], model: str, tenant: str) -> str:
    """Identifies a cloning input: the decoded audio of every file, in order, the model that clones it, and the
    tenant it is cloned for. Stored results are reused within a tenant only, so `reused` never tells one tenant
    that another uploaded the same recording. (The default tenant's hashes are those from before tenants.)"""
    digest = hashlib.sha256(model.encode() if tenant == DEFAULT_TENANT else f"{model}\n{tenant}".encode())
    for ref in references:
        digest.update(len(ref.samples).to_bytes(8, "little"))
        digest.update(ref.samples.tobytes())
    return digest.hexdigest()
