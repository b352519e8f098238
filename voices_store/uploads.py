"""Decoding reference audio uploads with pydub/ffmpeg (WAV, MP3, FLAC, OGG/Opus, M4A, any rate and
channel count) into what XTTS's cloning expects: mono float32 at 22.05 kHz."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError
from pydub.silence import detect_nonsilent

from voices_store.errors import NotAudio, UnusableAudio, UploadTooLarge

CLONE_SAMPLE_RATE = 22050
# XTTS refuses references under 0.33 s; under half a second of actual sound a voice cannot be learned.
MIN_SOUND_SECONDS = 0.5
SILENCE_THRESHOLD_DBFS = -50.0


@dataclass(frozen=True)
class Reference:
    filename: str
    samples: np.ndarray  # float32 mono at CLONE_SAMPLE_RATE
    sound_seconds: float

    @property
    def seconds(self) -> float:
        return len(self.samples) / CLONE_SAMPLE_RATE


def decode_reference(filename: str, data: bytes, *, max_bytes: int, max_seconds: float) -> Reference:
    if not data:
        raise UnusableAudio(f"file {filename!r} is empty")
    if len(data) > max_bytes:
        raise UploadTooLarge(
            f"file {filename!r} is {len(data) / 2**20:.1f} MB; the limit is MAX_UPLOAD_MB={max_bytes // 2**20}"
        )
    try:
        segment = AudioSegment.from_file(io.BytesIO(data))
    except (CouldntDecodeError, IndexError, OSError) as exc:
        raise NotAudio(
            f"file {filename!r} is not audio that ffmpeg can decode (WAV, MP3, FLAC, OGG/Opus, M4A, ...)"
        ) from exc
    if segment.frame_count() == 0:
        raise UnusableAudio(f"file {filename!r} holds no audio samples")
    seconds = len(segment) / 1000
    if seconds > max_seconds:
        raise UnusableAudio(
            f"file {filename!r} is {seconds:.1f} s long; references are limited to {max_seconds:g} s "
            "(XTTS uses at most the first 30 s)"
        )
    sounding = detect_nonsilent(segment, min_silence_len=100, silence_thresh=SILENCE_THRESHOLD_DBFS)
    sound_seconds = sum(end - start for start, end in sounding) / 1000
    if sound_seconds == 0:
        raise UnusableAudio(f"file {filename!r} is silent (nothing above {SILENCE_THRESHOLD_DBFS:g} dBFS)")
    if sound_seconds < MIN_SOUND_SECONDS:
        raise UnusableAudio(
            f"file {filename!r} has {sound_seconds:.2f} s of sound; XTTS needs at least {MIN_SOUND_SECONDS} s"
        )
    mono = segment.set_channels(1).set_frame_rate(CLONE_SAMPLE_RATE).set_sample_width(2)
    samples = np.frombuffer(mono.raw_data, dtype=np.int16).astype(np.float32) / 32768.0
    return Reference(filename, samples, sound_seconds)


def references_hash(references: list[Reference], model: str) -> str:
    """Identifies a cloning input: the decoded audio of every file, in order, and the model that clones it."""
    digest = hashlib.sha256(model.encode())
    for ref in references:
        digest.update(len(ref.samples).to_bytes(8, "little"))
        digest.update(ref.samples.tobytes())
    return digest.hexdigest()
