"""A worker process's own figures, kept in memory and published with its heartbeat (see shared/metrics.py).

Recording costs an increment in memory, never a Redis call: the synthesis path stays as it was. The heartbeat
(and every task's start and end, which wake it) sends a snapshot to Redis, where `GET /metrics` reads every
worker's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared import metrics
from workers.capacity import REALTIME_MARGIN

# Seconds from a job's acceptance by the API to the first chunk of its first segment (what its listener waits).
FIRST_AUDIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# Wall seconds per second of audio of one run of a segment: under 1 is faster than real time.
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class _State(Collector):
    """Figures the worker keeps elsewhere (the voice cache's counters, the scheduler's), read at snapshot time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        state = self.read()
        cache, batch = state.get("cache") or {}, state.get("batch") or {}
        for name, key, text in (
            ("xtts_voice_cache_hits", "hits", "Voice lookups served from the worker's cache"),
            ("xtts_voice_cache_misses", "misses", "Voice lookups that loaded the voice (from SQL or the request)"),
            ("xtts_voice_cache_evictions", "evictions", "Voices dropped to make room (SPEAKER_CACHE_MAX_SIZE)"),
            ("xtts_voice_cache_expirations", "expirations", "Voices dropped for age (SPEAKER_CACHE_TTL)"),
        ):
            yield CounterMetricFamily(name, text, value=cache.get(key, 0))
        yield GaugeMetricFamily("xtts_voice_cache_size", "Voices in the worker's cache", value=cache.get("size", 0))
        yield CounterMetricFamily("xtts_batch_steps", "Batched GPT steps the worker ran", value=batch.get("steps", 0))
        yield CounterMetricFamily(
            "xtts_batch_sequence_steps",
            "Sequences advanced by those steps; / xtts_batch_steps = mean sequences per step",
            value=batch.get("sequence_steps", 0),
        )
        yield GaugeMetricFamily(
            "xtts_batch_slots", "WORKER_MAX_BATCH: segments it may run at once", value=batch.get("max", 0)
        )
        yield GaugeMetricFamily("xtts_batch_active", "Segments it synthesizes now", value=batch.get("active", 0))
        yield GaugeMetricFamily(
            "xtts_batch_paused", "Bulk segments paused for live ones now", value=batch.get("paused", 0)
        )
        yield CounterMetricFamily(
            "xtts_batch_pauses", "Bulk segments paused for live ones, in all", value=batch.get("pauses", 0)
        )
        if batch.get("live_capacity") is not None:
            yield GaugeMetricFamily(
                "xtts_live_capacity",
                f"Live streams the worker carries at {REALTIME_MARGIN:g}x real time or faster, from its measured "
                "step and decode times",
                value=batch["live_capacity"],
            )
        speed = GaugeMetricFamily(
            "xtts_stream_speed",
            "Seconds of audio each stream gets per wall second at each batch size (measured or estimated)",
            labels=["batch"],
        )
        for size, value in (batch.get("stream_speed") or {}).items():
            speed.add_metric([size], value)
        yield speed
        held = GaugeMetricFamily(
            "xtts_segments_held", "Segment tasks the worker holds now, by class (live, bulk)", labels=["priority"]
        )
        for priority, count in (state.get("held") or {}).items():
            held.add_metric([priority], count)
        yield held


class WorkerMetrics:
    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.first_audio = Histogram(
            "xtts_time_to_first_audio_seconds",
            "Seconds from a job's acceptance to the first audio chunk of its first segment",
            buckets=FIRST_AUDIO_BUCKETS,
            registry=self.registry,
        )
        self.real_time_factor = Histogram(
            "xtts_real_time_factor",
            "Wall seconds per second of audio, per run of a segment (under 1: faster than real time)",
            buckets=RTF_BUCKETS,
            registry=self.registry,
        )
        self.segments = Counter(
            "xtts_segments",
            "Runs of segments by outcome (done, failed, retry, ...)",
            ["outcome"],
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "xtts_audio_seconds", "Seconds of audio of the segment runs that completed", registry=self.registry
        )
        self.clones = Counter("xtts_voice_clones", "Voices cloned", registry=self.registry)
        self.queue_wait = Histogram(
            "xtts_queue_wait_seconds",
            "Seconds a segment's task waited from reaching the broker to its run's start, by class (live, bulk)",
            ["priority"],
            buckets=FIRST_AUDIO_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_State(read_state))

    def snapshot(self) -> list[dict[str, Any]]:
        return metrics.snapshot(self.registry)
