"""Farms the tests share: one per (database backend, configuration), started when a test first asks for it and
handed from test to test, reset in between.

A test asks for "a farm of configuration X" with the `farm_with` fixture (tests/conftest.py):

    def test_x(farm): ...                                        # the common farm (TWO_WORKERS)
    def test_y(keyed_farm): ...                                  # API keys required, keys of alice and bob
    def test_z(farm_with): farm = farm_with(**SHORT_LEASES)      # a configuration below, idle and empty

Before each test the farm gets back what the previous test stopped or killed, and only that (a Redis server, the
database link, the API, a worker: one process, not the farm), loses every job, voice and stream of that test
(Redis keys deleted, database rows back to what the farm started with), and is checked idle and empty: no test
sees another's jobs. Tests of one configuration share processes, so a test that needs settings of its own adds them
to one of the configurations below (settings that do not disturb the other tests of that configuration) rather
than starting a farm for itself. Settings that only the API reads (API_ONLY_SETTINGS) cost an API restart, not a
farm.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table

from shared import metrics, registry, studio_speakers, voice_control
from shared.db import make_engine
from shared.streams import EPOCH_KEY
from tools.faults import TcpProxy
from tools.localfarm import Farm, RedisServer, create_api_key, migrate, wait_for

BACKENDS = ("sqlite", "postgresql")

# --- the configurations the suite shares (each on every backend a test runs on) ---------------------------------
# Two workers, default settings but a lease far too long to wait for (60 s): no test here waits for one to lapse,
# and a test that stops a worker shows that the other continues at once, not after the lease. The `farm` fixture.
TWO_WORKERS: dict[str, Any] = {"workers": 2, "SEGMENT_LEASE_SECONDS": "60"}
# One worker whose leases lapse within seconds (a worker killed mid-segment, a broker refusal, the database or Redis
# cut off), with a Redis that keeps its data over a restart and, on PostgreSQL, a database link a test can cut
# (`farm.database_proxy.down()`). The batching tests run here too: nothing of theirs depends on the lease.
SHORT_LEASES: dict[str, Any] = {
    "workers": 1,
    "persistent_redis": True,
    "database_proxy": True,
    "SEGMENT_LEASE_SECONDS": "4",
    "REAPER_INTERVAL_SECONDS": "1",
    "WORKER_MAX_BATCH": "4",
    "AGENT_WRITER_TTL_SECONDS": "3",  # a voice agent's context whose API process died is cancelled in seconds
}
# One worker that a test may freeze (SIGSTOP) for seconds while requests arrive: its registry entry outlives that
# (a heartbeat every 5 s, so 15 s), and its live capacity is pinned to 1 stream (not measured on a busy machine).
FREEZABLE: dict[str, Any] = {"workers": 1, "WORKER_HEARTBEAT_SECONDS": "5", "WORKER_LIVE_CAPACITY": "1"}
# One worker, audio kept in Redis for seconds only, one segment of a job at a time.
SHORT_AUDIO_TTL: dict[str, Any] = {"workers": 1, "STREAM_TTL_SECONDS": "4", "JOB_MAX_INFLIGHT_SEGMENTS": "1"}

# Settings only the API process reads (tests/test_tiers.py checks that no other part of the farm names them): a
# test that changes only these gets the farm of its other settings, with its API restarted.
API_ONLY_SETTINGS = frozenset(
    {
        "MAX_CONCURRENT_REQUESTS",
        "MAX_JOBS_PER_TENANT",
        "MAX_TOKENS_PER_REQUEST",
        "REQUEST_QUEUE_TIMEOUT_SECONDS",
        "MAX_LIVE_WAIT_SECONDS",
    }
)

# Redis keys of the farm's processes rather than of any job, which a reset keeps: the broker's queue bindings
# (kombu declares them once per connection), the worker registry, metrics (counters: tests compare differences),
# the built-in speakers' document, the Redis epoch, the voice caches' generation, and two locks an idle farm takes
# by itself. Everything else (job streams, stop flags, uploads, queued and unacknowledged messages) is deleted.
KEPT_KEYS = (
    "_kombu.*",
    "unacked_mutex",
    registry.PREFIX + "*",
    registry.NAMES,
    metrics.HTTP_REQUESTS,
    metrics.WORKER_PREFIX + "*",
    metrics.WORKER_NAMES,
    studio_speakers.PREFIX + "*",
    EPOCH_KEY,
    voice_control.GENERATION_KEY,
    "xtts:reaper",  # the reaper's lock (workers/), taken again every REAPER_INTERVAL_SECONDS
)
ADMIN_KEY = "operator"


class FarmInFastTest(RuntimeError):
    """A test of the fast tier (not marked `farm`) started a process of a farm."""


def _kept(key: bytes) -> bool:
    name = key.decode(errors="replace")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in KEPT_KEYS)


@dataclass(frozen=True)
class FarmSpec:
    """What a farm is made of; tests asking for equal specs share one farm.

    backend: `sqlite` or `postgresql` (a database of the farm's own on the suite's server).
    workers: Celery worker processes the farm keeps running (0: the API alone).
    persistent_redis: Redis with an append-only file, so a restart keeps its data.
    database_proxy: on PostgreSQL, the processes reach the database through a TcpProxy the test can cut.
    api_keys: keys made with the farm (by `python -m api.keys create`), one tenant each, kept across resets and
      found in `farm.api_keys`; with any, an admin key too, which the farm's helpers send.
    prepare: called with the migrated database's URL before any process starts (to import voices, say); what it
      writes is kept across resets.
    env: settings of every process of the farm (API_ONLY_SETTINGS aside).
    """

    backend: str = "sqlite"
    workers: int = 1
    persistent_redis: bool = False
    database_proxy: bool = False
    api_keys: tuple[str, ...] = ()
    prepare: Callable[[str], None] | None = None
    env: tuple[tuple[str, str], ...] = ()


def farm_spec(backend: str, workers: int, options: Mapping[str, Any]) -> tuple[FarmSpec, dict[str, str]]:
    """(the spec, the API-only settings) of `farm_with(workers, **options)`."""
    flags = {name: options[name] for name in ("persistent_redis", "database_proxy", "prepare") if name in options}
    api_keys = tuple(options.get("api_keys", ()))
    env = {k: str(v) for k, v in options.items() if k.isupper()}
    unknown = set(options) - set(flags) - set(env) - {"api_keys"}
    if unknown:
        raise TypeError(f"farm_with() got unknown options {sorted(unknown)} (settings are in upper case)")
    api_env = {k: v for k, v in env.items() if k in API_ONLY_SETTINGS}
    shared = tuple(sorted((k, v) for k, v in env.items() if k not in API_ONLY_SETTINGS))
    return FarmSpec(backend, workers, api_keys=api_keys, env=shared, **flags), api_env


class SharedFarm(Farm):
    """A farm of the pool: its own Redis server, database (reached directly by the resets, through the proxy by its
    processes) and processes."""

    def __init__(
        self,
        spec: FarmSpec,
        *,
        redis_server: RedisServer,
        database_url: str,
        database_proxy: TcpProxy | None,
        model_dir: Path,
        log_dir: Path,
        api_keys: dict[str, str],
        events: Counter[str],
    ) -> None:
        proxied = database_url
        if database_proxy is not None:
            address = database_url.rsplit("@", 1)[1].split("/", maxsplit=1)[0]
            proxied = database_url.replace(address, f"127.0.0.1:{database_proxy.port}")
        super().__init__(
            redis_url=redis_server.url,
            database_url=proxied,
            model_dir=model_dir,
            workers=spec.workers,
            log_dir=log_dir,
            extra_env=dict(spec.env),
            api_key=api_keys.get(ADMIN_KEY),
        )
        self.spec = spec
        self.backend = spec.backend
        self.redis_server = redis_server
        self.database_proxy = database_proxy
        self.api_keys = api_keys
        self.events = events  # what the pool did, for the session's summary
        self._db = make_engine(database_url)
        meta = MetaData()
        meta.reflect(self._db)
        self._tables: list[Table] = [t for t in meta.sorted_tables if t.name != "alembic_version"]
        self._baseline = self._rows()

    def _rows(self) -> dict[str, list[dict[str, Any]]]:
        with self._db.connect() as conn:
            return {t.name: [dict(row) for row in conn.execute(t.select()).mappings()] for t in self._tables}

    # --- between tests ----------------------------------------------------------------------------------------
    def ready(self, api_env: dict[str, str]) -> None:
        """Make the farm what a test may assume: every process of it running (restarting only those that are not),
        the API with `api_env`, no job, voice or stream of any earlier test, no worker busy. Asserts it."""
        self._repair()
        if api_env != self.api_env:
            self.api_env = dict(api_env)
            self.restart_api()
            self.events["API restarted with other settings"] += 1
        self.clear()
        self._wait_until_idle()
        self.clear()  # what a run that was stopping wrote meanwhile
        self.check_empty()

    def _repair(self) -> None:
        if not self.redis_server.running:
            self.redis_server.start()
            self.events["Redis servers restarted"] += 1
        if self.database_proxy is not None and self.database_proxy.is_cut:
            self.database_proxy.restore()
        if self.api is None or self.api.poll() is not None:
            self.start_api()
            self.events["APIs restarted"] += 1
        for name in [n for n, proc in self.workers.items() if proc.poll() is not None]:
            del self.workers[name]  # killed or stopped by the test
        for name in list(self.workers)[self.n_workers :]:
            self.stop_worker(name)  # started by the test beyond the farm's number
            self.events["workers a test added stopped"] += 1
        while len(self.workers) < self.n_workers:
            self.start_worker()
            self.events["workers restarted"] += 1
        self.wait_for_api()
        self._forget_dead_workers()

    def _forget_dead_workers(self) -> None:
        """Registry entries (they would stay listed until they expire) and metrics (kept for a day) of workers that
        are gone: a farm whose worker a test killed looks to the next test like a farm that never had that one."""
        r = self.redis()
        pids = {proc.pid for proc in self.workers.values()}
        for worker in registry.live_workers(r):
            if worker.get("pid") not in pids:
                registry.remove(r, worker["name"])
        live = {worker["name"] for worker in self.wait_for_workers(self.n_workers)}
        gone = [name for name in r.smembers(metrics.WORKER_NAMES) if name.decode() not in live]
        if gone:
            r.delete(*(metrics.WORKER_PREFIX.encode() + name for name in gone))
            r.srem(metrics.WORKER_NAMES, *gone)
        # Listed is not ready: a worker started (or whose Redis restarted) a moment ago may not listen yet for the
        # API's voice-cache messages, and one it missed is never sent again.
        wait_for(
            lambda: r.pubsub_numsub(voice_control.CHANNEL)[0][1] >= self.n_workers,
            30,
            "every worker to listen for voice-cache messages",
            interval=0.05,
        )

    def clear(self) -> None:
        """Deletes every job, voice, upload and stream: Redis keys but the farm's own (KEPT_KEYS), database rows
        but those the farm started with. A segment still running stops at its next chunk: its job is gone."""
        r = self.redis()
        doomed = [key for key in r.scan_iter(count=1000) if not _kept(key)]
        if doomed:
            r.delete(*doomed)
        with self._db.begin() as conn:
            for table in reversed(self._tables):
                conn.execute(table.delete())
            for table in self._tables:
                if self._baseline[table.name]:
                    conn.execute(table.insert(), self._baseline[table.name])

    def _wait_until_idle(self) -> None:
        def idle() -> bool:
            return not any(w.get("current") for w in self.live_workers())

        try:
            wait_for(idle, 30, "the workers to drop the segments of the last test", interval=0.1)
        except TimeoutError:
            busy = {w["pid"] for w in self.live_workers() if w.get("current")}
            for name in [n for n, proc in self.workers.items() if proc.pid in busy]:
                self.stop_worker(name)
                self.start_worker()
                self.events["workers restarted (still busy after a reset)"] += 1
            self._forget_dead_workers()

    def check_empty(self) -> None:
        rows = self._rows()
        left_rows = {t: len(r) for t, r in rows.items() if r != self._baseline[t]}
        assert not left_rows, f"rows of an earlier test left (table: rows now): {left_rows}"
        left = [key for key in self.redis().scan_iter(count=1000) if not _kept(key)]
        assert not left, f"Redis keys of an earlier test left: {left[:10]}"
        workers = self.live_workers()
        assert sorted(w["pid"] for w in workers) == sorted(p.pid for p in self.workers.values()), workers
        assert not [w["current"] for w in workers if w.get("current")], "a worker is still busy"

    def close(self) -> None:
        self.kill()  # idle and of no further use: no need to wait for graceful shutdowns
        self.redis_server.cleanup()
        if self.database_proxy is not None:
            self.database_proxy.stop()
        self._db.dispose()


class FarmPool:
    """The session's farms, by spec. At most `max_workers` worker processes run at once (each holds a model, and an
    idle one still heartbeats): the farm used least recently is stopped to make room, and started again if a later
    test asks for it (tests/conftest.py orders the tests so that this is rare)."""

    def __init__(
        self,
        model_dir: Path,
        make_database: Callable[[str], str],
        make_folder: Callable[[str], Path],
        max_workers: int = 6,
    ) -> None:
        self.model_dir = model_dir
        self.make_database = make_database
        self.make_folder = make_folder
        self.max_workers = max_workers
        self._farms: dict[FarmSpec, SharedFarm] = {}  # least recently used first
        self.events: Counter[str] = Counter()

    def get(self, spec: FarmSpec, api_env: dict[str, str]) -> SharedFarm:
        farm = self._farms.pop(spec, None)
        if farm is None:
            self._make_room(spec.workers)
            farm = self._start(spec, api_env)
        self._farms[spec] = farm
        farm.ready(api_env)
        return farm

    def _make_room(self, workers: int) -> None:
        while self._farms and sum(f.n_workers for f in self._farms.values()) + workers > self.max_workers:
            self._farms.pop(next(iter(self._farms))).close()
            self.events["farms stopped to make room"] += 1

    def _start(self, spec: FarmSpec, api_env: dict[str, str]) -> SharedFarm:
        database_url = self.make_database(spec.backend)
        migrate(database_url)
        if spec.prepare is not None:
            spec.prepare(database_url)
        api_keys = _make_keys(database_url, spec.api_keys)
        proxy = None
        if spec.database_proxy and spec.backend == "postgresql":
            proxy = TcpProxy("127.0.0.1", int(database_url.rsplit(":", 1)[1].split("/")[0])).start()
        server = RedisServer(persistent=spec.persistent_redis).start()
        farm = SharedFarm(
            spec,
            redis_server=server,
            database_url=database_url,
            database_proxy=proxy,
            model_dir=self.model_dir,
            log_dir=self.make_folder(f"farm-{spec.backend}-{len(self._farms)}"),
            api_keys=api_keys,
            events=self.events,
        )
        self.events["farms started"] += 1
        farm.api_env = dict(api_env)
        try:
            farm.start()
            farm.wait_for_api()
        except BaseException:
            farm.close()
            raise
        return farm

    def close(self) -> None:
        while self._farms:
            self._farms.popitem()[1].close()


def _make_keys(database_url: str, names: tuple[str, ...]) -> dict[str, str]:
    """The operator's keys for a farm's tenants (and an admin key, when there are any), made with the operator's
    command, several at once (each is a Python start-up)."""
    if not names:
        return {}
    wanted = [(ADMIN_KEY, True), *((name, False) for name in names)]
    with ThreadPoolExecutor(len(wanted)) as pool:
        made = pool.map(lambda w: create_api_key(database_url, w[0], "ops" if w[1] else None, admin=w[1]), wanted)
        return dict(zip([name for name, _ in wanted], made, strict=True))
