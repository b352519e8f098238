"""Results reused: a segment asked for again with the same explicit `seed` is answered from the audio made the first
time, and identical segments asked for at the same time share one synthesis.

What is cached is one segment's whole audio (its PCM and its attention marks), under a key that names everything the
audio depends on (`entry_key`): the tenant (a tenant never hears another's audio, nor learns what it asked for), the
model's fingerprint, the voice at its current revision, the language, the segment's text as normalised, every
synthesis parameter and the segment's seed. Only a request with an explicit seed is cached: without one, each request
draws new random numbers, and two of them are meant to differ.

Storage is Redis (where the farm's audio lives): a hash per entry, a sorted set ranking entries by last use, and a
byte count; storing an entry evicts the least recently used ones until the cache holds at most `RESULT_CACHE_MB`.
Each step is one Lua call, so concurrent workers never count an entry twice or leave one unranked.

In flight: the first run of a key takes its lead (`{entry}:lead`, renewed with each chunk it writes, lapsing within a
lease if its worker dies); a run that finds the lead held waits, subscribed to the lead's channel, until the entry is
stored (then it replays it) or the lead is let go without one (then it takes the lead itself).
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis

PREFIX = "xtts:result"
LRU_KEY = "xtts:result:lru"  # entry key -> last use (seconds since the epoch)
BYTES_KEY = "xtts:result:bytes"  # bytes held by all entries
STATS_KEY = "xtts:result:stats"  # counters: hits, shared, misses, bytes_saved

# KEYS: entry, lead, lru. ARGV: run, lead milliseconds, now. A hit touches the entry's rank and returns its audio.
_CLAIM = """
local entry = redis.call('HMGET', KEYS[1], 'pcm', 'marks')
if entry[1] then
  redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
  return {'hit', entry[1], entry[2]}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'busy'} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {'lead'}
"""

# KEYS: entry, lru, bytes, lead. ARGV: pcm, marks, limit, now, run. An entry larger than the whole cache is not kept
# (it would only evict everything else). Entries evicted are named in the ranking (the cache lives in one Redis,
# never a cluster: shared/redis_client.py).
_STORE = """
local size = #ARGV[1] + #ARGV[2]
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
if size <= tonumber(ARGV[3]) then
  local old = redis.call('HGET', KEYS[1], 'size')
  if old then redis.call('DECRBY', KEYS[3], old) end
  redis.call('HSET', KEYS[1], 'pcm', ARGV[1], 'marks', ARGV[2], 'size', size)
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  total = redis.call('INCRBY', KEYS[3], size)
end
while total > tonumber(ARGV[3]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest or oldest == KEYS[1] then
    -- Nothing else left, yet over: entries were removed behind the cache's back. Count again what is left.
    total = tonumber((oldest and redis.call('HGET', oldest, 'size')) or '0')
    redis.call('SET', KEYS[3], total)
    break
  end
  local bytes = redis.call('HGET', oldest, 'size')
  redis.call('DEL', oldest)
  redis.call('ZREM', KEYS[2], oldest)
  total = redis.call('DECRBY', KEYS[3], bytes or 0)
end
if redis.call('GET', KEYS[4]) == ARGV[5] then redis.call('DEL', KEYS[4]) end
redis.call('PUBLISH', KEYS[4], 'stored')
return total
"""

# KEYS: lead. ARGV: run (and milliseconds, to renew).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], 'released')
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True)
class Hit:
    pcm: bytes
    marks: bytes  # shared.streams.encode_marks


class Claim(enum.Enum):
    LEAD = "lead"  # nobody makes it: this run does, and stores it
    BUSY = "busy"  # another run is making it now


def entry_key(
    tenant: str,
    *,
    model: str,
    voice: str,
    language: str,
    text: str,
    params: dict[str, Any],
    seed: int,
) -> str:
    """The key of a segment's audio: a digest of everything the audio depends on, the tenant outside it (so that an
    operator can see and drop one tenant's entries)."""
    described = json.dumps(
        {"model": model, "voice": voice, "language": language, "text": text, "params": params, "seed": seed},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    digest = hashlib.sha256(described.encode()).hexdigest()
    return f"xtts:result:{tenant}:{digest}"


def _lead_key(key: str) -> str:
    return f"{key}:lead"


def claim(r: redis.Redis, key: str, run: str, lead_seconds: float) -> Hit | Claim:
    """The stored audio, or `Claim.LEAD` (this run makes it: `store` or `release` it), or `Claim.BUSY`."""
    reply = cast(
        list[bytes],
        r.eval(_CLAIM, 3, key, _lead_key(key), LRU_KEY, run, max(1, round(lead_seconds * 1000)), time.time()),
    )
    if reply[0] == b"hit":
        return Hit(reply[1], reply[2] or b"-")
    return Claim.LEAD if reply[0] == b"lead" else Claim.BUSY


def store(r: redis.Redis, key: str, run: str, pcm: bytes, marks: bytes, limit_bytes: int) -> None:
    """Keep the segment's audio (evicting the least recently used entries past `limit_bytes`) and let go of the
    lead, waking the runs waiting for it."""
    r.eval(_STORE, 4, key, LRU_KEY, BYTES_KEY, _lead_key(key), pcm, marks, limit_bytes, time.time(), run)
    r.hincrby(STATS_KEY, "misses", 1)


def release(r: redis.Redis, key: str, run: str) -> None:
    """Let go of the lead without an entry (the run failed or stopped): a waiting run takes it."""
    r.eval(_RELEASE, 1, _lead_key(key), run)


def renew(r: redis.Redis, key: str, run: str, lead_seconds: float) -> None:
    r.eval(_RENEW, 1, _lead_key(key), run, max(1, round(lead_seconds * 1000)))


def count_hit(r: redis.Redis, hit: Hit, *, shared: bool) -> None:
    """A hit: `shared` when the run waited for a synthesis in flight, else one stored before it asked."""
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(STATS_KEY, "shared" if shared else "hits", 1)
    pipe.hincrby(STATS_KEY, "bytes_saved", len(hit.pcm))
    pipe.execute()


@contextmanager
def lead_changes(r: redis.Redis, key: str) -> Iterator[Any]:
    """Subscribed to the lead's channel: yields `wait(timeout)`, which returns when the lead stores or lets go (or
    the timeout passes). Subscribe, then claim again, then wait: a change between the two is not missed."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(_lead_key(key))
    try:

        def wait(timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if pubsub.get_message(timeout=left) is not None:
                    return

        yield wait
    finally:
        pubsub.close()


@dataclass(frozen=True)
class Totals:
    hits: int
    shared: int
    misses: int
    bytes_saved: int
    bytes: int
    entries: int


def totals(r: redis.Redis) -> Totals:
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(STATS_KEY)
    pipe.get(BYTES_KEY)
    pipe.zcard(LRU_KEY)
    stats, held, entries = pipe.execute()
    figures = {name.decode(): int(value) for name, value in cast(dict[bytes, bytes], stats).items()}
    return Totals(
        figures.get("hits", 0),
        figures.get("shared", 0),
        figures.get("misses", 0),
        figures.get("bytes_saved", 0),
        int(held or 0),
        int(entries),
    )
