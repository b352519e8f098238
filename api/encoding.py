"""Encoding a response's audio: one encoder per response, fed the 16-bit PCM chunks as they arrive.

`wav` and `pcm` need no encoder: a streamed WAV is the header with "unknown length" followed by the PCM, a
complete WAV (`encode_file`) has its true length. The compressed formats go through one ffmpeg process per response,
through pipes, that sees the whole response as one continuous PCM stream (never one encoder per chunk: no clicks, no
priming silence at each chunk, one valid container). How each known pitfall is avoided by construction:

- a complete file whose header lacks what only its end knows (FLAC's total samples in STREAMINFO, MP3's Xing/LAME
  frame count, encoder delay and padding: players show no duration, or cannot seek or play gaplessly): the whole
  audio is known before a complete file is encoded (`encode_file`), so ffmpeg writes it to a seekable temporary
  file and goes back to fill the header in;
- streamed MP3 that players reject: no Xing/LAME header (`-write_xing 0`): on a pipe ffmpeg cannot go back to fill
  it in, and a header announcing the wrong length (or none) makes players stop early or refuse to seek (a streamed
  FLAC likewise says "total samples unknown", 0, which is true);
- Ogg Opus: the Ogg muxer writes its identification and comment pages first, then short pages (`page_duration`),
  so the stream is valid from its first bytes and leaves soon;
- a lost last second: the end of the input is signalled by closing ffmpeg's stdin, and its output is read to EOF
  (the encoder flushes its last frames and the muxer its last page only then);
- latency: `-flush_packets 1` writes each packet as soon as it is encoded.

A feeder thread pulls the PCM chunks and writes them to ffmpeg's stdin while the generator reads its stdout, so
neither pipe can fill up while the other waits (no deadlock), and encoded bytes are yielded as soon as ffmpeg emits
them, even while the next chunk is still being synthesized. Whatever ends the response (the end of the audio, an
error, the client leaving: the generator is closed), the `finally` kills and reaps ffmpeg and joins the thread.
Exceptions raised by the chunk source (ClientGone, a failed synthesis...) reach the generator's consumer unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import subprocess
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Final, Literal, get_args

from api.framing import streaming_wav_header, wav_file
from shared.audio import SAMPLE_RATE
from shared.errors import FarmError

AudioFormat = Literal["wav", "pcm", "mp3", "opus", "aac", "flac"]
FORMATS: Final[tuple[str, ...]] = get_args(AudioFormat)
PCM_MEDIA_TYPE: Final = f"audio/pcm;rate={SAMPLE_RATE};channels=1;encoding=s16le"
MEDIA_TYPES: Final[dict[str, str]] = {
    "wav": "audio/wav",
    "pcm": PCM_MEDIA_TYPE,
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
DESCRIPTIONS: Final[dict[str, str]] = {
    "wav": "WAV, 24 kHz mono 16-bit PCM (streamed: the header says 'unknown length')",
    "pcm": "raw 16-bit little-endian PCM, 24 kHz mono, no header",
    "mp3": "MP3 (LAME, 128 kbit/s; a complete file has a Xing/LAME header with its length, a stream none)",
    "opus": "Opus in Ogg (64 kbit/s, 20 ms frames)",
    "aac": "AAC-LC in ADTS frames (96 kbit/s)",
    "flac": "FLAC (lossless; a complete file's header states its length, a stream's says unknown)",
}

_INPUT: Final = ("-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-probesize", "32", "-analyzeduration", "0")
_OUTPUT: Final[dict[str, tuple[str, ...]]] = {
    "mp3": ("-c:a", "libmp3lame", "-b:a", "128k", "-id3v2_version", "0", "-f", "mp3"),
    "opus": ("-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20", "-page_duration", "20000", "-f", "ogg"),
    "aac": ("-c:a", "aac", "-b:a", "96k", "-f", "adts"),
    "flac": ("-c:a", "flac", "-f", "flac"),
}
# Only for streams: a header that cannot be filled in on a pipe is left out rather than written wrong.
_STREAM_OUTPUT: Final[dict[str, tuple[str, ...]]] = {"mp3": ("-write_xing", "0")}
READ_SIZE: Final = 65536
# ffmpeg is killed at once when a response ends early; this only bounds the wait for a thread still inside its
# chunk source (a Redis read blocks at most STREAM_READ_BLOCK_MS before the source checks for a client).
_JOIN_SECONDS: Final = 30.0


class EncoderFailed(FarmError):
    """ffmpeg could not encode the audio (missing codec, crashed)."""

    status, code = 500, "encoder_failed"


_HEAD: Final = ("ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", *_INPUT, "-i", "pipe:0", "-vn")


def ffmpeg_command(fmt: str) -> list[str]:
    """A stream: PCM in on stdin, each encoded packet out on stdout as soon as it exists."""
    return [*_HEAD, *_OUTPUT[fmt], *_STREAM_OUTPUT.get(fmt, ()), "-flush_packets", "1", "pipe:1"]


def ffmpeg_file_command(fmt: str, path: Path) -> list[str]:
    """A complete file: PCM in on stdin, written to `path`, which ffmpeg can seek in to complete the header."""
    return [*_HEAD, *_OUTPUT[fmt], "-y", str(path)]


def encode(pcm_chunks: Iterable[bytes], fmt: str) -> Generator[bytes]:
    """A streamed response body in `fmt` (one of FORMATS), yielding encoded bytes as soon as they exist."""
    if fmt == "wav":
        yield streaming_wav_header()
        yield from pcm_chunks
    elif fmt == "pcm":
        yield from pcm_chunks
    else:
        yield from _ffmpeg(pcm_chunks, fmt)


def encode_file(pcm: bytes, fmt: str) -> bytes:
    """A complete file in `fmt`, its header stating its true length (WAV, FLAC, MP3's Xing/LAME header)."""
    if fmt == "wav":
        return wav_file(pcm)
    if fmt == "pcm":
        return pcm
    with tempfile.TemporaryDirectory(prefix="xtts-audio-") as folder:
        path = Path(folder) / f"audio.{fmt}"
        done = subprocess.run(ffmpeg_file_command(fmt, path), input=pcm, capture_output=True, check=False)
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip()[-500:]
            raise EncoderFailed(f"ffmpeg could not encode {fmt} (exit {done.returncode}): {why}")
        return path.read_bytes()


class _Feeder:
    """The thread that writes the PCM chunks to ffmpeg's stdin, then closes it (the end of the input)."""

    def __init__(self, chunks: Iterable[bytes], stdin: object) -> None:
        self._chunks = chunks
        self._stdin = stdin
        self.stop = threading.Event()
        self.error: BaseException | None = None
        # The source runs in this thread: it keeps the request's context (log fields: job id, tenant).
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._run,), name="audio-encoder-feeder", daemon=True)

    def _run(self) -> None:
        source = iter(self._chunks)
        try:
            for chunk in source:
                if self.stop.is_set():
                    break
                self._stdin.write(chunk)  # type: ignore[attr-defined]
                self._stdin.flush()  # type: ignore[attr-defined]
        except BrokenPipeError:
            pass  # ffmpeg is gone: the response ended early (killed) or ffmpeg failed (its exit status says)
        except BaseException as exc:  # handed to the consumer's thread
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                close = getattr(source, "close", None)
                if close is not None:
                    close()  # a generator source runs its own `finally` (e.g. detaching its listener) here
            with contextlib.suppress(OSError):
                self._stdin.close()  # type: ignore[attr-defined]


def _read_some(fd: int) -> bytes:
    """What the pipe holds now, up to READ_SIZE, waiting for its first bytes (b"": ffmpeg closed it). Under gevent
    (gunicorn's worker) a child's pipes are non-blocking: the wait for them yields to the other connections."""
    while True:
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            from gevent.socket import wait_read  # only gevent's pipes are non-blocking here

            wait_read(fd)


def _ffmpeg(pcm_chunks: Iterable[bytes], fmt: str) -> Iterator[bytes]:
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            ffmpeg_command(fmt), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0
        )
        assert process.stdin is not None and process.stdout is not None
        feeder = _Feeder(pcm_chunks, process.stdin)
        try:
            feeder.thread.start()
            out = process.stdout.fileno()
            while data := _read_some(out):
                yield data
            feeder.thread.join(_JOIN_SECONDS)
            if feeder.error is not None:
                raise feeder.error
            if process.wait() != 0:
                stderr.seek(0)
                why = stderr.read().decode(errors="replace").strip()[-500:]
                raise EncoderFailed(f"ffmpeg could not encode {fmt} (exit {process.returncode}): {why}")
        finally:
            feeder.stop.set()
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()
            with contextlib.suppress(OSError):
                process.stdin.close()
            if feeder.thread.ident is not None:
                feeder.thread.join(_JOIN_SECONDS)
