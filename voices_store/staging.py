"""Staging decoded reference audio in Redis for a cloning worker (no shared disk; the broker message
carries only the content hash)."""

from __future__ import annotations

from typing import cast

import numpy as np
import redis

from voices_store.latents import array_from_bytes, array_to_bytes


def _key(content_hash: str) -> str:
    return f"xtts:upload:{content_hash}"


def stage(r: redis.Redis, content_hash: str, references: list[np.ndarray], ttl: int) -> None:
    pipe = r.pipeline()
    pipe.delete(_key(content_hash))
    pipe.hset(_key(content_hash), mapping={str(i): array_to_bytes(a) for i, a in enumerate(references)})
    pipe.expire(_key(content_hash), ttl)
    pipe.execute()


def fetch(r: redis.Redis, content_hash: str) -> list[np.ndarray]:
    fields = cast(dict[bytes, bytes], r.hgetall(_key(content_hash)))
    if not fields:
        raise LookupError(f"the reference audio {content_hash[:12]} is no longer in Redis (expired or Redis restarted)")
    return [array_from_bytes(fields[k]) for k in sorted(fields, key=int)]


def discard(r: redis.Redis, content_hash: str) -> None:
    r.delete(_key(content_hash))
