"""The farm's metrics, for `GET /metrics` on any API process: the whole farm, not one process's view.

API processes and workers may run on different machines, so nothing here relies on a shared disk (prometheus
multiprocess files) or on one process's memory. Everything meets in Redis:

* **Workers** keep their counters and histograms in memory (`workers/metrics.py`, prometheus_client) and publish a
  snapshot of them with their registry heartbeat (`publish_worker`: one SET, off the synthesis path) under
  `xtts:metrics:worker:<name>`. The snapshot outlives the worker by `RETENTION_SECONDS`, so a worker that stopped
  still counts in the totals for a day; its gauges (batch occupancy now) are shown only while it is live.
* **API processes** count each request by endpoint, method and status code into one hash (`count_request`:
  one HINCRBY per request, atomic across every process and machine), and what the listeners of their streams heard
  into another (`record_stall`, `record_stream`: the playback clock of shared/playback.py).
* **`FarmCollector`**, a prometheus_client collector, reads those at scrape time, and adds what SQL and the broker
  know: jobs by state (SQL), queue depth (the length of each Celery queue in Redis), live workers (the registry).

Every worker figure carries a `worker` label (its registry name, `host/pid` or the Celery node name's host).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any, cast

import redis
from prometheus_client import Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select

from shared import registry, result_cache
from shared.audio import speech_seconds
from shared.db import session_scope
from shared.models import ACTIVE_STATES, Job, JobSegment, JobState
from shared.priority import Priority
from shared.tasks import BULK_QUEUE, SYNTHESIS_QUEUE, VOICES_QUEUE

log = logging.getLogger(__name__)

HTTP_REQUESTS = "xtts:metrics:http"
PLAYBACK = "xtts:metrics:playback"
WORKER_PREFIX = "xtts:metrics:worker:"
WORKER_NAMES = "xtts:metrics:workers"
# How long a stopped worker's counters stay in the totals after its last heartbeat.
RETENTION_SECONDS = 24 * 3600
QUEUES = (SYNTHESIS_QUEUE, BULK_QUEUE, VOICES_QUEUE)
# kombu's Redis transport keeps a queue's messages of priority p > 0 in a list of its own ("<queue>\x06\x16<p>").
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
# Families whose value is "now" rather than "so far": shown for live workers only.
_LIVE_ONLY_TYPES = frozenset({"gauge"})


# --- API processes: requests ------------------------------------------------------------------------------------
def count_request(r: redis.Redis, endpoint: str, method: str, code: int) -> None:
    r.hincrby(HTTP_REQUESTS, f"{endpoint} {method} {code}", 1)


# --- API processes: what listeners heard --------------------------------------------------------------------------
# Each figure of the playback hash: its metric (a counter, by class of work) and what it counts.
PLAYBACK_FIGURES = {
    "stall_seconds": (
        "xtts_stream_stall_seconds",
        "Seconds listeners heard silence after their first audio: audio that reached the API after the playback "
        "clock of what it had sent ran out (all API processes)",
    ),
    "deadline_misses": (
        "xtts_stream_deadline_misses",
        "Chunks that reached the API after their deadline, the playback clock of the audio sent before them",
    ),
    "streams": ("xtts_streams_read", "Readers of a job's audio that have stopped reading"),
    "stalled_streams": ("xtts_streams_stalled", "Of those, the streams that stalled (0.1 s of silence or more in all)"),
    "audio_seconds": ("xtts_stream_audio_seconds", "Seconds of audio the API sent to readers of jobs' audio"),
}


def record_stall(r: redis.Redis, priority: str, seconds: float) -> None:
    """A chunk reached the API `seconds` after the playback clock of the audio it had sent ran out."""
    pipe = r.pipeline(transaction=False)
    pipe.hincrbyfloat(PLAYBACK, f"{priority} stall_seconds", seconds)
    pipe.hincrby(PLAYBACK, f"{priority} deadline_misses", 1)
    pipe.execute()


def record_stream(r: redis.Redis, priority: str, audio_seconds: float, continuous: bool) -> None:
    """A reader of a job's audio stopped reading after it had sent `audio_seconds` of audio."""
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(PLAYBACK, f"{priority} streams", 1)
    pipe.hincrby(PLAYBACK, f"{priority} stalled_streams", 0 if continuous else 1)
    pipe.hincrbyfloat(PLAYBACK, f"{priority} audio_seconds", audio_seconds)
    pipe.execute()


def playback_totals(r: redis.Redis) -> dict[str, dict[str, float]]:
    """{priority: {stall_seconds, deadline_misses, streams, stalled_streams, audio_seconds}}, every class listed."""
    totals = {p.value: dict.fromkeys(PLAYBACK_FIGURES, 0.0) for p in Priority}
    for field, value in cast(dict[bytes, bytes], r.hgetall(PLAYBACK)).items():
        priority, figure = field.decode().split(" ", 1)
        if priority in totals and figure in PLAYBACK_FIGURES:
            totals[priority][figure] = float(value)
    return totals


# --- workers: snapshots of their own registry --------------------------------------------------------------------
def snapshot(source: CollectorRegistry) -> list[dict[str, Any]]:
    """A JSON-ready copy of every family in a worker's registry (the `_created` timestamps left out)."""
    families = []
    for family in source.collect():
        samples = [[s.name, s.labels, s.value] for s in family.samples if not s.name.endswith("_created")]
        families.append({"name": family.name, "type": family.type, "help": family.documentation, "samples": samples})
    return families


def publish_worker(r: redis.Redis, worker: str, families: list[dict[str, Any]]) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.set(WORKER_PREFIX + worker, json.dumps(families), ex=RETENTION_SECONDS)
    pipe.sadd(WORKER_NAMES, worker)
    pipe.execute()


def worker_snapshots(r: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    names = sorted(n.decode() for n in cast(set[bytes], r.smembers(WORKER_NAMES)))
    values = r.mget([WORKER_PREFIX + n for n in names]) if names else []
    gone = [n for n, v in zip(names, values, strict=True) if v is None]
    if gone:  # past their retention
        r.srem(WORKER_NAMES, *gone)
    return {n: json.loads(v) for n, v in zip(names, values, strict=True) if v is not None}


def merge_workers(snapshots: dict[str, list[dict[str, Any]]], live: set[str]) -> list[Metric]:
    """One family per name, with every worker's samples under its `worker` label."""
    merged: dict[str, Metric] = {}
    for worker, families in sorted(snapshots.items()):
        for family in families:
            if family["type"] in _LIVE_ONLY_TYPES and worker not in live:
                continue
            metric = merged.setdefault(family["name"], Metric(family["name"], family["help"], family["type"]))
            for name, labels, value in family["samples"]:
                metric.add_sample(name, {"worker": worker, **labels}, value)
    return list(merged.values())


# --- the farm, at scrape time -----------------------------------------------------------------------------------
def jobs_by_state() -> dict[str, int]:
    with session_scope() as s:
        counted = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).tuples().all())
    return {state.value: int(counted.get(state.value, 0)) for state in JobState}


def backlog_audio_seconds() -> dict[str, float]:
    """About how many seconds of audio the farm has still to make, by class: the text of every segment of an active
    job that has not finished, as XTTS would speak it (a segment half made counts whole)."""
    unfinished = JobSegment.state.in_(ACTIVE_STATES)
    with session_scope() as s:
        chars: dict[str, int] = dict(
            s.execute(
                select(Job.priority, func.coalesce(func.sum(func.length(JobSegment.text)), 0))
                .join(JobSegment, JobSegment.job_id == Job.id)
                .where(Job.state.in_(ACTIVE_STATES), unfinished)
                .group_by(Job.priority)
            )
            .tuples()
            .all()
        )
    return {p.value: round(speech_seconds(int(chars.get(p.value, 0))), 1) for p in Priority}


def queue_depths(r: redis.Redis) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for queue in QUEUES:
        for suffix in _PRIORITY_SUFFIXES:
            pipe.llen(queue + suffix)
    lengths = pipe.execute()
    per = len(_PRIORITY_SUFFIXES)
    return {queue: sum(lengths[i * per : (i + 1) * per]) for i, queue in enumerate(QUEUES)}


def _cache_hit_ratio(families: Iterable[Metric]) -> float | None:
    totals: dict[str, float] = defaultdict(float)
    for family in families:
        if family.name in ("xtts_voice_cache_hits", "xtts_voice_cache_misses"):
            totals[family.name] += sum(s.value for s in family.samples)
    lookups = totals["xtts_voice_cache_hits"] + totals["xtts_voice_cache_misses"]
    return totals["xtts_voice_cache_hits"] / lookups if lookups else None


class FarmCollector(Collector):
    """Reads the whole farm's figures from Redis and SQL each time Prometheus scrapes any API process."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.r = redis_client

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily("xtts_jobs", "Jobs in each state (SQL)", labels=["state"])
        for state, count in jobs_by_state().items():
            states.add_metric([state], count)
        yield states

        depth = GaugeMetricFamily("xtts_queue_depth", "Tasks waiting in each Celery queue (Redis)", labels=["queue"])
        for queue, length in queue_depths(self.r).items():
            depth.add_metric([queue], length)
        yield depth

        backlog = GaugeMetricFamily(
            "xtts_backlog_audio_seconds",
            "About how many seconds of audio the active jobs of each class still have to make (SQL: their unfinished "
            "segments' text, as XTTS speaks it)",
            labels=["priority"],
        )
        for priority, seconds in backlog_audio_seconds().items():
            backlog.add_metric([priority], seconds)
        yield backlog

        live = registry.live_workers(self.r)
        yield GaugeMetricFamily("xtts_workers_live", "Workers whose heartbeat is current", value=len(live))

        requests = CounterMetricFamily(
            "xtts_http_requests",
            "HTTP requests answered, by endpoint, method and status code (all API processes)",
            labels=["endpoint", "method", "code"],
        )
        counted = cast(dict[bytes, bytes], self.r.hgetall(HTTP_REQUESTS))
        for field, value in sorted(counted.items()):
            endpoint, method, code = field.decode().split(" ", 2)
            requests.add_metric([endpoint, method, code], int(value))
        yield requests

        yield from _playback_families(playback_totals(self.r))
        yield from _result_cache_families(result_cache.totals(self.r))

        worker_families = merge_workers(worker_snapshots(self.r), {w["name"] for w in live})
        yield from worker_families
        ratio = _cache_hit_ratio(worker_families)
        if ratio is not None:
            yield GaugeMetricFamily(
                "xtts_voice_cache_hit_ratio", "Voice-cache hits / lookups, all workers since they started", value=ratio
            )


def _result_cache_families(totals: result_cache.Totals) -> Iterator[Metric]:
    hits = CounterMetricFamily(
        "xtts_result_cache_hits",
        "Segments answered with audio made before (stored: kept from an earlier request; in_flight: shared with an "
        "identical segment being made at the time) instead of synthesized (shared/result_cache.py)",
        labels=["kind"],
    )
    hits.add_metric(["stored"], totals.hits)
    hits.add_metric(["in_flight"], totals.shared)
    yield hits
    yield CounterMetricFamily(
        "xtts_result_cache_misses", "Seeded segments synthesized and stored for reuse", value=totals.misses
    )
    yield CounterMetricFamily(
        "xtts_result_cache_saved_bytes",
        "Bytes of 24 kHz 16-bit PCM answered from the result cache (a second of audio is 48 000)",
        value=totals.bytes_saved,
    )
    yield GaugeMetricFamily("xtts_result_cache_bytes", "Bytes the result cache holds now", value=totals.bytes)
    yield GaugeMetricFamily("xtts_result_cache_entries", "Segments the result cache holds now", value=totals.entries)


def _playback_families(totals: dict[str, dict[str, float]]) -> Iterator[Metric]:
    for figure, (name, documentation) in PLAYBACK_FIGURES.items():
        family = CounterMetricFamily(name, documentation, labels=["priority"])
        for priority, figures in totals.items():
            family.add_metric([priority], figures[figure])
        yield family
