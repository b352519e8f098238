"""The farm's audio is 16-bit mono PCM, framed as WAV. Reading a (streamed) WAV header, and writing WAV files
whose header states the exact length once it is known."""

from __future__ import annotations

import struct
from typing import BinaryIO

SAMPLE_WIDTH = 2
UNKNOWN_SIZE = 0xFFFFFFFF  # what a streamed header says before the length is known; players read to the end


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte header of 16-bit mono PCM; `data_bytes` None for a stream whose length is not known yet."""
    size = UNKNOWN_SIZE - 36 if data_bytes is None else data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", size + 36)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * SAMPLE_WIDTH, SAMPLE_WIDTH, 16)
        + b"data"
        + struct.pack("<I", size)
    )


def finish_wav(out: BinaryIO, data_bytes: int) -> None:
    """Write the real sizes into a header written by `wav_header(rate)` at the start of a seekable file."""
    out.seek(4)
    out.write(struct.pack("<I", data_bytes + 36))
    out.seek(40)
    out.write(struct.pack("<I", data_bytes))
    out.seek(0, 2)


class WavReader:
    """Takes a WAV as it streams in, in pieces of any size, and gives back its PCM. It reads the RIFF chunks
    up to `data` (so headers with extra chunks work too) and learns the sample rate from `fmt `."""

    def __init__(self) -> None:
        self._head = b""
        self._in_data = False
        self.sample_rate: int | None = None

    def feed(self, piece: bytes) -> bytes:
        if self._in_data:
            return piece
        self._head += piece
        return self._parse()

    def _parse(self) -> bytes:
        head = self._head
        if len(head) < 12:
            return b""
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError("the farm's answer is not a WAV file")
        offset = 12
        while len(head) >= offset + 8:
            name, size = head[offset : offset + 4], struct.unpack("<I", head[offset + 4 : offset + 8])[0]
            if name == b"data":
                self._in_data, self._head = True, b""
                return head[offset + 8 :]
            if len(head) < offset + 8 + size:
                return b""
            if name == b"fmt ":
                _fmt, channels, rate, _byte_rate, _align, bits = struct.unpack(
                    "<HHIIHH", head[offset + 8 : offset + 24]
                )
                if channels != 1 or bits != 16:
                    raise ValueError(f"unexpected WAV format: {channels} channels, {bits} bits")
                self.sample_rate = rate
            offset += 8 + size + (size & 1)  # chunks are padded to an even size
        return b""
