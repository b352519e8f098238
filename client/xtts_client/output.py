"""Where the CLI writes audio: a file (written as `<name>.part`, renamed when complete, so a failed run never
leaves a truncated file under the name asked for) or stdout."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

from xtts_client.wav import finish_wav, wav_header

DEFAULT_SAMPLE_RATE = 24000


class AudioOutput:
    def __init__(self, path: str | None, fmt: str) -> None:
        self.format = fmt
        self.path = None if path in (None, "-") else Path(path)
        self._part = self.path.with_name(self.path.name + ".part") if self.path else None
        self._file: BinaryIO = self._part.open("wb") if self._part else sys.stdout.buffer
        self._header_written = False
        self.pcm_bytes = 0

    def write(self, data: bytes) -> None:
        """Audio already in the output's format (encoded by the farm)."""
        self._file.write(data)
        self._file.flush()

    def write_pcm(self, pcm: bytes, sample_rate: int) -> None:
        """16-bit PCM, framed as WAV when the output is wav (a header at once, its sizes right at the end)."""
        if self.format == "wav" and not self._header_written:
            self._file.write(wav_header(sample_rate))
            self._header_written = True
        self._file.write(pcm)
        self._file.flush()
        self.pcm_bytes += len(pcm)

    def finish(self, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        """The audio is complete: state the WAV's exact length in a file's header, and name the file. (Stdout
        keeps the streamed header's "unknown length", which players read to the end: it may be a pipe, or a file
        opened for appending, where seeking back cannot work.)"""
        if self.format == "wav":
            if not self._header_written:
                self.write_pcm(b"", sample_rate)
            if self._part is not None:
                finish_wav(self._file, self.pcm_bytes)
        self._file.flush()
        if self._part is not None and self.path is not None:
            self._file.close()
            os.replace(self._part, self.path)

    def discard(self) -> None:
        """The audio will not be complete: remove the partial file (stdout keeps what it got)."""
        if self._part is not None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                self._part.unlink()
