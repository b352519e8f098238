"""A worker's real-time capacity, measured as it runs: how many live streams its batch can carry while each one's
audio is made faster than it plays.

One scheduler iteration advances every member by one audio token (one batched GPT step) and decodes, on the same
thread, the audio of the tokens the members made. So with b members, each stream gets one token's audio,
AUDIO_SECONDS_PER_TOKEN (about 46 ms), per `step(b) + b * decode_per_token` wall seconds. The step time is kept
per batch size (an exponentially weighted mean: the machine's load changes), the decode time per token of audio
as one mean (HiFi-GAN's cost grows with the frames it decodes, batched or not). Batch sizes not seen yet are
estimated from the two nearest seen (linear in the batch size: a GPT step's cost is a fixed part plus a part per
row), so a worker that only ever ran one stream still gives an estimate.

`live_capacity` is the largest batch size whose streams run at least `margin` times real time: a stream at
exactly 1x has no slack for a decode burst or a newcomer's prefill. An operator may pin it instead
(WORKER_LIVE_CAPACITY: a figure benchmarked on the machine, steadier than one measured under a noisy neighbour).
"""

from __future__ import annotations

import threading

from shared.audio import TOKEN_SECONDS

AUDIO_SECONDS_PER_TOKEN = TOKEN_SECONDS  # XTTS-v2: 4 mel frames of 256 samples at 22.05 kHz per audio token
SMOOTHING = 0.1  # weight of a new measurement in the moving means
REALTIME_MARGIN = 1.25


class Capacity:
    def __init__(self, max_batch: int, pinned: int | None = None) -> None:
        self.max_batch = max_batch
        self.pinned = pinned  # WORKER_LIVE_CAPACITY: reported whatever is measured
        self._step: dict[int, float] = {}  # batch size -> mean seconds per GPT step
        self._decode_per_token = 0.0
        self._lock = threading.Lock()

    def observe_step(self, batch: int, seconds: float) -> None:
        with self._lock:
            known = self._step.get(batch)
            self._step[batch] = seconds if known is None else known + SMOOTHING * (seconds - known)

    def observe_decode(self, tokens: int, seconds: float) -> None:
        if tokens <= 0:
            return
        per_token = seconds / tokens
        with self._lock:
            known = self._decode_per_token
            self._decode_per_token = per_token if known == 0.0 else known + SMOOTHING * (per_token - known)

    def step_seconds(self, batch: int) -> float | None:
        """The mean (or estimated) seconds of one GPT step at this batch size; None before any measurement."""
        with self._lock:
            measured = dict(self._step)
        if batch in measured:
            return measured[batch]
        if not measured:
            return None
        sizes = sorted(measured)
        if len(sizes) == 1:  # one point: assume the cost grows in proportion to the rows (pessimistic)
            return measured[sizes[0]] * batch / sizes[0]
        below = [s for s in sizes if s < batch]
        above = [s for s in sizes if s > batch]
        lo, hi = (
            (below[-1], above[0]) if below and above else ((sizes[-2], sizes[-1]) if below else (sizes[0], sizes[1]))
        )
        slope = (measured[hi] - measured[lo]) / (hi - lo)
        return max(measured[lo] + slope * (batch - lo), 0.0)

    def stream_speed(self, batch: int) -> float | None:
        """Seconds of audio each of `batch` streams gets per wall second (above 1: faster than it plays)."""
        step = self.step_seconds(batch)
        if step is None:
            return None
        cycle = step + batch * self._decode_per_token
        return AUDIO_SECONDS_PER_TOKEN / cycle if cycle > 0 else None

    def chunk_seconds(self, batch: int, tokens: int) -> float | None:
        """About how long a member of a batch of `batch` takes to make a chunk of `tokens` audio tokens (one step
        and one decode per token; a newcomer's prefill is left to the caller's margin); None before any
        measurement."""
        step = self.step_seconds(batch)
        if step is None:
            return None
        return tokens * (step + self._decode_per_token)

    def live_capacity(self, margin: float = REALTIME_MARGIN) -> int | None:
        """The most streams this worker carries at `margin` x real time or faster (at least 1: a worker always
        takes one stream); None before it has measured anything. The pinned figure when there is one."""
        if self.pinned:
            return min(self.pinned, self.max_batch)
        if self.stream_speed(1) is None:
            return None
        fitting = [b for b in range(1, self.max_batch + 1) if (self.stream_speed(b) or 0.0) >= margin]
        return max(fitting, default=1)

    def snapshot(self) -> dict[str, object]:
        return {
            "live_capacity": self.live_capacity(),
            "stream_speed": {str(b): round(s, 3) for b in range(1, self.max_batch + 1) if (s := self.stream_speed(b))},
        }


def batch_limit(max_batch: int, live: int, capacity: int | None) -> int:
    """The members a batch runs at once: every slot without live work (`live` = 0) or before the capacity is
    measured; with live work, its live capacity, though never fewer than the live segments it holds."""
    if not live or capacity is None:
        return max_batch
    return min(max_batch, max(capacity, live))
