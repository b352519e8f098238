"""The per-worker voice caches, seen and cleared from one place."""

from __future__ import annotations

import time

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from api.responses import json_model
from api.schemas.cache import CacheCleared, CacheCounters, CacheStats, CacheTotals, WorkerCacheStats
from shared import registry, voice_control
from shared.redis_client import get_redis

bp = APIBlueprint("cache", __name__, abp_tags=[Tag(name="cache", description="Voice caches of the workers")])

CLEAR_WAIT_SECONDS = 5.0


@bp.get("/cache/stats", responses={200: CacheStats})
def cache_stats() -> Response:
    """Hits, misses, size and evictions of every live worker's voice cache, and in total."""
    workers = [WorkerCacheStats(worker=w["name"], **w.get("cache", {})) for w in registry.live_workers(get_redis())]
    counters = CacheCounters.model_fields
    total = {key: sum(getattr(w, key) for w in workers) for key in counters}
    lookups = total["hits"] + total["misses"]
    return json_model(
        CacheStats(
            workers=workers,
            total=CacheTotals(**total, hit_rate=round(total["hits"] / lookups, 4) if lookups else None),
        )
    )


@bp.post("/cache/clear", responses={200: CacheCleared})
def cache_clear() -> Response:
    """Clear every worker's voice cache; answers once every live worker has (or after a few seconds)."""
    r = get_redis()
    generation = voice_control.request_clear(r)
    deadline = time.monotonic() + CLEAR_WAIT_SECONDS
    while True:
        workers = registry.live_workers(r)
        pending = [w["name"] for w in workers if w.get("cache", {}).get("generation", 0) < generation]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    cleared = [w["name"] for w in workers if w["name"] not in pending]
    return json_model(CacheCleared(generation=generation, cleared=cleared, pending=pending))
