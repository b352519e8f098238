"""Live-worker registry in Redis: each worker process publishes what it has loaded, refreshed by a heartbeat.

A worker's entry (`xtts:worker:{name}`) expires three heartbeats after its last refresh, so the API
sees only workers that are alive, on whatever machine they run.
"""

from __future__ import annotations

import json
from typing import Any

import redis

PREFIX = "xtts:worker:"


def publish(r: redis.Redis, name: str, info: dict[str, Any], ttl: int) -> None:
    r.set(PREFIX + name, json.dumps(info), ex=ttl)


def remove(r: redis.Redis, name: str) -> None:
    r.delete(PREFIX + name)


def live_workers(r: redis.Redis) -> list[dict[str, Any]]:
    keys = sorted(r.scan_iter(match=PREFIX + "*", count=500))
    values = r.mget(keys) if keys else []
    return [json.loads(v) for v in values if v]


def model_catalog(r: redis.Redis) -> tuple[list[str], list[str]] | None:
    """(languages, built-in speakers) of the model the live workers serve, or None when no worker is up."""
    return catalog_of(live_workers(r))


def catalog_of(workers: list[dict[str, Any]]) -> tuple[list[str], list[str]] | None:
    if not workers:
        return None
    languages = sorted({lang for w in workers for lang in w.get("languages", [])})
    speakers = sorted({name for w in workers for name in w.get("speakers", [])})
    return languages, speakers
