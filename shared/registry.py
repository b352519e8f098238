"""Live-worker registry in Redis: each worker process publishes what it has loaded, refreshed by a heartbeat.

A worker's entry (`xtts:worker:{name}`) expires three heartbeats after its last refresh (server-side, so
clocks of different machines do not matter), and the set `xtts:workers` names the entries to look at, so
reading the registry costs one SMEMBERS and one MGET however many other keys Redis holds.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

PREFIX = "xtts:worker:"
NAMES = "xtts:workers"


def publish(r: redis.Redis, name: str, info: dict[str, Any], ttl: int) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.set(PREFIX + name, json.dumps(info), ex=ttl)
    pipe.sadd(NAMES, name)
    pipe.execute()


def remove(r: redis.Redis, name: str) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.delete(PREFIX + name)
    pipe.srem(NAMES, name)
    pipe.execute()


def live_workers(r: redis.Redis) -> list[dict[str, Any]]:
    names = sorted(n.decode() for n in cast(set[bytes], r.smembers(NAMES)))
    values = r.mget([PREFIX + n for n in names]) if names else []
    gone = [n for n, v in zip(names, values, strict=True) if v is None]
    if gone:  # their entries expired: the workers stopped heartbeating
        r.srem(NAMES, *gone)
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
