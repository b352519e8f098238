"""Messages from the API to every worker's voice cache, over Redis pub/sub.

`clear` bumps a generation counter that workers also compare before every voice lookup, so a worker that
missed the message (reconnecting, busy) still clears before it next uses a voice. `evict:<id>` drops a
deleted or overwritten voice at once (correctness never depends on it: workers check revisions in SQL).
"""

from __future__ import annotations

import redis

CHANNEL = "xtts:voices:control"
GENERATION_KEY = "xtts:voices:cache_generation"


def request_clear(r: redis.Redis) -> int:
    generation = int(r.incr(GENERATION_KEY))
    r.publish(CHANNEL, f"clear:{generation}")
    return generation


def request_evict(r: redis.Redis, voice_id: str) -> None:
    r.publish(CHANNEL, f"evict:{voice_id}")


def current_generation(r: redis.Redis) -> int:
    return int(r.get(GENERATION_KEY) or 0)
