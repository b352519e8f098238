"""The playback clock of a real-time listener: when each piece of a stream's audio is due, and how long the
listener heard silence because it came late.

Playback starts the moment the first audio arrives and runs at 1x. Each later piece is due when the audio before it
has been played; if it arrives after that, the player is silent (stalled) until it does, and playback resumes from
there: the clock pauses while stalled, so one late piece is counted once, not again for every piece after it.

The API keeps one per reader of a job's audio (api/delivery.py) and reports what it measured (`/metrics`:
stall seconds and deadline misses); the benchmark's listener model (benchmarks/player.py) replays arrival times
through the same clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# Under this much silence in all, a stream counts as continuous (one 20 ms audio frame is not heard as a stall).
CONTINUITY_LIMIT_S = 0.1


@dataclass
class PlaybackClock:
    first_audio_at: float | None = None  # None: no audio yet
    runs_out_at: float = 0.0  # when the audio delivered so far has been played
    stall_s: float = 0.0
    stalls: int = 0  # how many times the player fell silent (deadline misses)
    audio_s: float = 0.0

    def arrive(self, now: float, seconds: float) -> float:
        """A piece of `seconds` of audio arrived at `now`: the silence it ended (0 when it came in time)."""
        if seconds <= 0:
            return 0.0
        late = 0.0
        if self.first_audio_at is None:
            self.first_audio_at = self.runs_out_at = now
        elif now > self.runs_out_at:
            late = now - self.runs_out_at
            self.stall_s += late
            self.stalls += 1
            self.runs_out_at = now
        self.runs_out_at += seconds
        self.audio_s += seconds
        return late

    @property
    def continuous(self) -> bool:
        return self.first_audio_at is not None and self.stall_s < CONTINUITY_LIMIT_S
