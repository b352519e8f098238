"""A real-time listener: what a person hears from a stream of audio, given when each piece of it arrived, through
the playback clock the API measures its streams with (shared/playback.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.playback import CONTINUITY_LIMIT_S, PlaybackClock

PCM_BYTES_PER_SECOND = 2 * 24000  # the farm's `pcm` response format: 16-bit mono at 24 kHz


@dataclass(frozen=True)
class Playback:
    first_audio_s: float | None  # None: no audio arrived at all
    stall_s: float
    stalls: int  # how many times the player fell silent
    audio_s: float

    @property
    def continuous(self) -> bool:
        return self.first_audio_s is not None and self.stall_s < CONTINUITY_LIMIT_S


def play(arrivals: Iterable[tuple[float, float]]) -> Playback:
    """`arrivals`: (arrival time, audio seconds) of each piece, in order of arrival, times from the request."""
    clock = PlaybackClock()
    for arrived, seconds in arrivals:
        clock.arrive(arrived, seconds)
    return Playback(
        first_audio_s=clock.first_audio_at, stall_s=clock.stall_s, stalls=clock.stalls, audio_s=clock.audio_s
    )


def pcm_seconds(size: int) -> float:
    return size / PCM_BYTES_PER_SECOND
