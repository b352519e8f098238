"""The real-time listener model, and many streams through one worker's scheduler (on its own thread, as a worker
runs it), measured as their listeners would hear them.

A listener starts playing at a stream's first chunk and plays in real time; when the next chunk has not arrived
by the time the audio in hand runs out, playback stalls until it does (benchmarks/player.py). A stream's *stall* is
the sum of those waits: zero means a listener heard it without a gap.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.player import play
from workers.scheduler import BatchScheduler, Segment


def stall_seconds(arrivals: Sequence[tuple[float, float]]) -> float:
    """Total stall of a real-time listener, given each chunk's (arrival time, audio seconds) in order
    (benchmarks/player.py's model)."""
    return play(arrivals).stall_s


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass
class StreamRecord:
    """What one stream's listener got: chunks as (seconds since submission, audio seconds), and the checks."""

    submitted: float
    arrivals: list[tuple[float, float]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    audio: list[torch.Tensor] = field(default_factory=list)
    finite: bool = True
    on_cpu: bool = True
    error: str | None = None

    @property
    def first_audio_s(self) -> float:
        return next((t for t, s in self.arrivals if s > 0), float("inf"))

    @property
    def audio_s(self) -> float:
        return sum(s for _, s in self.arrivals)


def run_streams(
    scheduler: BatchScheduler, segments: Sequence[Segment], keep_audio: bool = False, timeout: float = 300.0
) -> tuple[list[StreamRecord], float]:
    """Submit every segment at once to `scheduler`, run by its own thread (`BatchScheduler.run`), each stream
    consumed by a thread of its own as a worker's task threads do. Returns each stream's record and the wall time
    from submission to the last chunk."""
    runner = threading.Thread(target=scheduler.run, name="batch-scheduler", daemon=True)
    runner.start()
    sample_rate = scheduler.sample_rate
    records: list[StreamRecord] = []
    started = time.perf_counter()

    def consume(segment: Segment) -> Callable[[], None]:
        record = StreamRecord(time.perf_counter())
        records.append(record)
        handle = scheduler.submit(segment)

        def run() -> None:
            try:
                for chunk in handle.events(timeout=timeout):
                    record.arrivals.append((time.perf_counter() - record.submitted, chunk.audio.numel() / sample_rate))
                    record.tokens.extend(chunk.tokens)
                    record.finite &= bool(torch.isfinite(chunk.audio).all())
                    record.on_cpu &= chunk.audio.device.type == "cpu"
                    if keep_audio:
                        record.audio.append(chunk.audio)
            except Exception as exc:  # recorded: the caller reports it
                record.error = f"{type(exc).__name__}: {exc}"

        return run

    consumers = [threading.Thread(target=consume(s), daemon=True) for s in segments]
    for consumer in consumers:
        consumer.start()
    for consumer in consumers:
        consumer.join(timeout)
    wall = time.perf_counter() - started
    scheduler.stop()
    runner.join(timeout)
    return records, wall


def summary(records: Sequence[StreamRecord], wall: float) -> dict[str, Any]:
    """First audio p50/p95, stalls per the real-time listener model, aggregate real-time factor."""
    firsts = [r.first_audio_s for r in records]
    stalls = [stall_seconds(r.arrivals) for r in records]
    audio = sum(r.audio_s for r in records)
    return {
        "streams": len(records),
        "first_audio_p50_s": statistics.median(firsts),
        "first_audio_p95_s": p95(firsts),
        "stall_p50_s": statistics.median(stalls),
        "stall_max_s": max(stalls),
        "streams_without_stall": sum(s == 0 for s in stalls),
        "audio_s_per_stream": statistics.median(r.audio_s for r in records),
        "aggregate_rtf": wall / audio if audio else float("inf"),  # synthesis seconds per audio second, all streams
        "aggregate_audio_per_wall_s": audio / wall if wall else 0.0,
        "errors": sum(r.error is not None for r in records),
        "chunks_finite": all(r.finite for r in records),
        "chunks_on_cpu": all(r.on_cpu for r in records),
    }
