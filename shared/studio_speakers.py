"""The built-in speakers' latents, published by the workers for GET /studio_speakers (the official XTTS server's
shape), since the API has no model and may share no disk with the workers.

A worker writes the JSON document once under a key named by the digest of its model's speakers, and names that
digest in its registry entry; the API serves the document of a digest the live workers name. So a changed model
(other speakers, other latents) publishes under a new key and replaces the old one for the API as soon as its
workers are the live ones; old documents expire. Workers refresh the expiry while they live and write the document
again if Redis lost it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import redis

PREFIX = "xtts:studio_speakers:"
TTL_SECONDS = 600  # a document outlives its last worker this long
REFRESH_SECONDS = 60  # how often a live worker renews (or rewrites) it


def key(digest: str) -> str:
    return PREFIX + digest


def refresh(r: redis.Redis, digest: str) -> bool:
    """Renew the document's expiry; False when Redis does not have it (never written, or lost)."""
    return bool(r.expire(key(digest), TTL_SECONDS))


def publish(r: redis.Redis, digest: str, document: bytes) -> None:
    r.set(key(digest), document, ex=TTL_SECONDS)


def digests_of(workers: list[dict[str, Any]]) -> list[str]:
    """The digests the live workers name, the most common first (workers of two models during a rolling update)."""
    counts = Counter(d for w in workers if isinstance(d := w.get("studio_speakers"), str) and d)
    return [digest for digest, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def read(r: redis.Redis, digests: list[str]) -> bytes | None:
    """The first of these digests' documents that Redis has, or None."""
    for digest in digests:
        document = cast(bytes | None, r.get(key(digest)))
        if document is not None:
            return document
    return None
