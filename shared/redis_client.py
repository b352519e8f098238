"""One Redis connection pool per process, created lazily so that forked workers never share sockets.

With REDIS_SENTINELS set, the client is Sentinel's: each new connection asks the sentinels where the master is now,
so after a failover the farm's next connection goes to the promoted replica (a command cut off by the failover
fails once, as it would with Redis restarting: the farm's callers already retry or resume from there).
"""

from __future__ import annotations

import os
from typing import Any, cast

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel

from shared.settings import Settings, get_settings

_client: tuple[int, tuple[str, ...], redis.Redis] | None = None
# What every client of the farm's Redis is made with: a connect that fails fast, and a dead socket noticed.
CLIENT_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 30, "retry_on_timeout": True}


def get_redis() -> redis.Redis:
    """Binary-safe client (audio travels as raw bytes); reconnects after a fork or a change of the Redis settings."""
    global _client  # noqa: PLW0603 - one pool per process
    settings = get_settings()
    names = (settings.REDIS_URL, settings.REDIS_SENTINELS, settings.REDIS_SENTINEL_MASTER)
    if _client is None or _client[0] != os.getpid() or _client[1] != names:
        _client = (os.getpid(), names, new_client(settings))
    return _client[2]


def new_client(settings: Settings) -> redis.Redis:
    """A client of the farm's Redis: REDIS_URL's, or the master the sentinels name."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.REDIS_URL, **CLIENT_OPTIONS)
    url = parse_url(settings.REDIS_URL)
    auth = {key: url[key] for key in ("username", "password", "db") if url.get(key) is not None}
    sentinel = Sentinel(
        settings.redis_sentinels,
        sentinel_kwargs={"socket_timeout": 5, "socket_connect_timeout": 5, **sentinel_auth(settings)},
    )
    master = sentinel.master_for(settings.REDIS_SENTINEL_MASTER, redis_class=redis.Redis, **CLIENT_OPTIONS, **auth)
    return cast(redis.Redis, master)


def sentinel_auth(settings: Settings) -> dict[str, str]:
    """How to sign in to the sentinels themselves (REDIS_SENTINEL_PASSWORD), for redis-py and kombu alike."""
    password = settings.REDIS_SENTINEL_PASSWORD
    return {"password": password.get_secret_value()} if password is not None else {}
