"""The per-worker voice caches, seen and cleared from one place."""

from __future__ import annotations

import time

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from shared import registry, voice_control
from shared.redis_client import get_redis

bp = APIBlueprint("cache", __name__, abp_tags=[Tag(name="cache", description="Voice caches of the workers")])

COUNTERS = ("hits", "misses", "evictions", "expirations", "invalidations", "size")
CLEAR_WAIT_SECONDS = 5.0


@bp.get("/cache/stats")
def cache_stats() -> Response:
    """Hits, misses, size and evictions of every live worker's voice cache, and in total."""
    workers = [{"worker": w["name"], **w.get("cache", {})} for w in registry.live_workers(get_redis())]
    total = {key: sum(w.get(key, 0) for w in workers) for key in COUNTERS}
    lookups = total["hits"] + total["misses"]
    total["hit_rate"] = round(total["hits"] / lookups, 4) if lookups else None
    return jsonify({"workers": workers, "total": total})


@bp.post("/cache/clear")
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
    return jsonify({"generation": generation, "cleared": cleared, "pending": pending})
