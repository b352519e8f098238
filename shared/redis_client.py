"""One Redis connection pool per process, created lazily so that forked workers never share sockets.

With REDIS_SENTINELS set, the client is Sentinel's: each new connection asks the sentinels where the master is now,
so after a failover the farm's next connection goes to the promoted replica (a command cut off by the failover
fails once, as it would with Redis restarting: the farm's callers already retry or resume from there).
"""

from __future__ import annotations

import os
import threading
from typing import Any, cast

import redis
from redis.connection import parse_url
from redis.exceptions import MaxConnectionsError
from redis.sentinel import Sentinel, SentinelConnectionPool

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


# The most connections one process's pool opens; a command finding them all busy waits for one (POOL_WAIT_SECONDS
# at most) rather than failing: an API process serving thousands of listeners (api/fanout.py) may have more of
# them touching Redis at one moment than it should hold sockets for.
POOL_SIZE = 100
POOL_WAIT_SECONDS = 20.0


class _WaitingPool:
    """Mixed into a redis-py pool (REDIS_URL's, or Sentinel's): a caller waits for a free connection (in turn, on a
    semaphore: no polling) instead of getting redis-py's MaxConnectionsError ("Too many connections")."""

    max_connections: int

    def _start_waiting(self) -> None:
        self._free = threading.Semaphore(self.max_connections)
        self._lent: set[int] = set()  # the connections handed out through the semaphore, by id()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._free.acquire(timeout=POOL_WAIT_SECONDS):
            raise MaxConnectionsError(f"no Redis connection came free within {POOL_WAIT_SECONDS:g} s")
        try:
            connection = super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self._free.release()
            raise
        self._lent.add(id(connection))
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)  # type: ignore[misc]
        if id(connection) in self._lent:  # released once, however often redis-py calls this
            self._lent.discard(id(connection))
            self._free.release()


class WaitingConnectionPool(_WaitingPool, redis.ConnectionPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_waiting()


class WaitingSentinelPool(_WaitingPool, SentinelConnectionPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_waiting()


def new_client(settings: Settings) -> redis.Redis:
    """A client of the farm's Redis: REDIS_URL's, or the master the sentinels name."""
    if not settings.redis_sentinels:
        pool = WaitingConnectionPool.from_url(settings.REDIS_URL, max_connections=POOL_SIZE, **CLIENT_OPTIONS)
        return redis.Redis(connection_pool=pool)
    url = parse_url(settings.REDIS_URL)
    auth = {key: url[key] for key in ("username", "password", "db") if url.get(key) is not None}
    sentinel = Sentinel(
        settings.redis_sentinels,
        sentinel_kwargs={"socket_timeout": 5, "socket_connect_timeout": 5, **sentinel_auth(settings)},
    )
    master = sentinel.master_for(
        settings.REDIS_SENTINEL_MASTER,
        redis_class=redis.Redis,
        connection_pool_class=WaitingSentinelPool,
        max_connections=POOL_SIZE,
        **CLIENT_OPTIONS,
        **auth,
    )
    return cast(redis.Redis, master)


def sentinel_auth(settings: Settings) -> dict[str, str]:
    """How to sign in to the sentinels themselves (REDIS_SENTINEL_PASSWORD), for redis-py and kombu alike."""
    password = settings.REDIS_SENTINEL_PASSWORD
    return {"password": password.get_secret_value()} if password is not None else {}
