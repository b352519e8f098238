"""A real-time listener: what a person hears from a stream of audio, given when each piece of it arrived.

Playback starts the moment the first audio arrives and runs at 1x. Each later piece is due when the audio before it
has been played; if it arrives after that, the player is silent (stalled) until it does, and playback resumes from
there: the playback clock pauses while stalled, so one late piece is counted once, not again for every piece after
it. A stream plays with no audible stall when its stall seconds stay under `CONTINUITY_LIMIT_S` in all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Under this much silence in all, a stream counts as continuous (one 20 ms audio frame is not heard as a stall).
CONTINUITY_LIMIT_S = 0.1
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
    first: float | None = None
    runs_out = 0.0  # the playback clock: when the audio delivered so far has been played
    stall = 0.0
    stalls = 0
    audio = 0.0
    for arrived, seconds in arrivals:
        if seconds <= 0:
            continue
        if first is None:
            first = runs_out = arrived
        elif arrived > runs_out:
            stall += arrived - runs_out
            stalls += 1
            runs_out = arrived
        runs_out += seconds
        audio += seconds
    return Playback(first_audio_s=first, stall_s=stall, stalls=stalls, audio_s=audio)


def pcm_seconds(size: int) -> float:
    return size / PCM_BYTES_PER_SECOND
