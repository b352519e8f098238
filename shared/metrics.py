"""The farm's metrics, for `GET /metrics` on any API process: the whole farm, not one process's view.

API processes and workers may run on different machines, so nothing here relies on a shared disk (prometheus
multiprocess files) or on one process's memory. Everything meets in Redis:

* **Workers** keep their counters and histograms in memory (`workers/metrics.py`, prometheus_client) and publish a
  snapshot of them with their registry heartbeat (`publish_worker`: one SET, off the synthesis path) under
  `xtts:metrics:worker:<name>`. The snapshot outlives the worker by `RETENTION_SECONDS`, so a worker that stopped
  still counts in the totals for a day; its gauges (batch occupancy now) are shown only while it is live.
* **API processes** count each request by endpoint, method and status code into one hash (`count_request`:
  one HINCRBY per request, atomic across every process and machine).
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

from shared import registry
from shared.db import session_scope
from shared.models import Job, JobState
from shared.tasks import BULK_QUEUE, SYNTHESIS_QUEUE, VOICES_QUEUE

log = logging.getLogger(__name__)

HTTP_REQUESTS = "xtts:metrics:http"
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

        worker_families = merge_workers(worker_snapshots(self.r), {w["name"] for w in live})
        yield from worker_families
        ratio = _cache_hit_ratio(worker_families)
        if ratio is not None:
            yield GaugeMetricFamily(
                "xtts_voice_cache_hit_ratio", "Voice-cache hits / lookups, all workers since they started", value=ratio
            )
