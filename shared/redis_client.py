"""One Redis connection pool per process, created lazily so that forked workers never share sockets."""

from __future__ import annotations

import os

import redis

from shared.settings import get_settings

_client: tuple[int, str, redis.Redis] | None = None


def get_redis() -> redis.Redis:
    """Binary-safe client (audio travels as raw bytes); reconnects after a fork or a change of REDIS_URL."""
    global _client  # noqa: PLW0603 - one pool per process
    url = get_settings().REDIS_URL
    if _client is None or _client[0] != os.getpid() or _client[1] != url:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30, retry_on_timeout=True)
        _client = (os.getpid(), url, client)
    return _client[2]
