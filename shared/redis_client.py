"""One Redis connection pool per process, created lazily so that forked workers never share sockets."""

from __future__ import annotations

import os

import redis

from shared.settings import get_settings

_pool: tuple[int, redis.Redis] | None = None


def get_redis() -> redis.Redis:
    """Binary-safe client (audio travels as raw bytes); reconnects after a fork."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        client = redis.Redis.from_url(
            get_settings().REDIS_URL, socket_connect_timeout=5, health_check_interval=30, retry_on_timeout=True
        )
        _pool = (os.getpid(), client)
    return _pool[1]


def reset_redis() -> None:
    global _pool
    _pool = None
