"""A local farm of real processes, for the tests and the benchmark: a private Redis server, Celery workers
running the dev model, and the API under gunicorn, all wired to one database. Nothing here is mocked."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


def _ephemeral_ports() -> range:
    """The ports the kernel picks as the local end of outgoing connections (Linux: ip_local_port_range)."""
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server a test starts. Chosen below the kernel's ephemeral range: a port the
    kernel hands out (bind to 0) can be taken, between this check and the server's bind, by any outgoing connection
    of the busy test machine as its local end, and the server then fails to start (seen in CI: an API that never
    answered). Never the same port twice in one test run, so one test's stopped server cannot be mistaken for
    another's."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral and p not in _handed_out]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


# A built-in speaker of the dev checkpoint (it carries real XTTS-v2 speaker names).
DEV_SPEAKER = "Claribel Dervla"


def run_worker_until_it_exits(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A Celery worker process of the farm started with exactly `env`, for a test of a start-up that must refuse
    (its output kept)."""
    return subprocess.run(  # noqa: PLW1510 - the caller judges the exit status
        [str(VENV_BIN / "celery"), "-A", "workers.celery_app", "worker", "--pool=solo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tts_body(text: str, tokens: int, chunk: int = 10, speaker: str = DEV_SPEAKER, **extra: Any) -> dict[str, Any]:
    """A synthesis request of exactly `tokens` audio tokens: the dev checkpoint's random weights never emit the stop
    token, so its lengths are pinned with min_new_tokens = max_new_tokens."""
    return {
        "text": text,
        "language": "en",
        "speaker_id": speaker,
        "min_new_tokens": tokens,
        "max_new_tokens": tokens,
        "stream_chunk_size": chunk,
        **extra,
    }


class ProcessExited(RuntimeError):
    """A farm process a wait depends on has exited: waiting longer cannot help."""


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # not ready yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
    )


class RedisServer:
    """A private redis-server on a free port that a test can stop and start: without persistence (a restart
    loses everything, as a crashed cache would) or, `persistent`, with an append-only file (a restart keeps it)."""

    def __init__(
        self,
        persistent: bool = False,
        replica_of: int | None = None,
        args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
        password: str | None = None,
    ) -> None:
        self.host = host  # the address it listens on
        self.prefix = prefix  # what its command runs under (`ip netns exec <host>`)
        self.password = password  # required of clients (Redis serves other hosts only with one)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="xtts-redis-"))
        self.persistent = persistent
        self.replica_of = replica_of  # the port of the master this one replicates (on this machine)
        self.args = args  # more of redis-server's options
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
                *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
                *self.args,
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), 10, "redis-server")
        return self

    def kill(self) -> None:
        """SIGKILL: what a crashed machine does (nothing flushed, nothing said to replicas or sentinels)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


REPLICATOR = "replicator"  # the replica's user (and password) on the master of a RedisSentinels


class RedisSentinels:
    """A master, a replica of it and `count` sentinels watching them (real `redis-server --sentinel` processes),
    quick to fail over: a master that has not answered for `down_after_ms` is replaced by the replica."""

    def __init__(self, name: str = "xtts", count: int = 3, down_after_ms: int = 1000) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix="xtts-sentinel-"))
        self.procs: list[subprocess.Popen] = []
        self.servers: dict[int, RedisServer] = {}
        try:
            self._start(count, down_after_ms)
        except BaseException:
            self.cleanup()  # nothing left running when the set could not be made
            raise

    def _start(self, count: int, down_after_ms: int) -> None:
        name = self.name
        # The replica signs in to the master as a user of its own, so that a test can cut replication alone.
        self.master = RedisServer(args=("--user", REPLICATOR, "on", f">{REPLICATOR}", "~*", "&*", "+@all"))
        self.servers[self.master.port] = self.master  # known before it starts: cleaned up whatever happens
        self.master.start()
        self.replica = RedisServer(
            replica_of=self.master.port, args=("--masteruser", REPLICATOR, "--masterauth", REPLICATOR)
        )
        self.servers[self.replica.port] = self.replica
        self.replica.start()
        self.ports = [free_port() for _ in range(count)]
        quorum = count // 2 + 1
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"  # a sentinel rewrites its file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} {down_after_ms * 5}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            binary = shutil.which("redis-server") or "redis-server"
            self.procs.append(
                subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            )
        wait_for(lambda: self.master_port() == self.master.port, 10, "the sentinels to see the master")
        wait_for(self._replicated, 10, "the replica to sync")

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def master_port(self) -> int | None:
        """The master's port, as the first sentinel that answers says."""
        for port in self.ports:
            try:
                address = redis.Redis(port=port).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def cut_replication(self) -> None:
        """The replica stops receiving the master's writes (its user disabled, its link closed) while the master
        goes on: what asynchronous replication can leave a replica with when its master dies."""
        master = redis.Redis(port=self.master.port)
        master.acl_setuser(REPLICATOR, enabled=False)
        master.client_kill_filter(_type="replica")
        wait_for(lambda: not self._replicated(), 10, "the replica to lose its link")

    def _replicated(self) -> bool:
        info = redis.Redis(port=self.replica.port).info("replication")
        return info.get("master_link_status") == "up"

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
        for server in self.servers.values():
            server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (make test installs Debian's postgresql)")
    return str(found)


class PostgresCluster:
    """A throwaway PostgreSQL server for one test session: `initdb` into a temporary directory (trust
    authentication, on 127.0.0.1 and a free port), stopped and deleted afterwards. Nothing of the machine's own
    PostgreSQL (its clusters, its configuration) is read or changed. As root, it runs as the `postgres` user,
    since PostgreSQL refuses to run as root."""

    def __init__(self, host: str = "127.0.0.1", prefix: tuple[str, ...] = (), network: str | None = None) -> None:
        self.host = host  # the address it listens on
        self.network = network  # a CIDR whose hosts may connect too (trusted: a test's private bridge)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="xtts-postgres-"))
        self.data = self.dir / "data"
        self._as: list[str] = list(prefix)  # what its commands run under (`ip netns exec <host>`)
        if os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as += ["runuser", "-u", "postgres", "--"]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/test"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> PostgresCluster:
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        if self.network:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.network} trust\n")
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.dir} -c fsync=off"
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", "start"
        )
        import psycopg

        with psycopg.connect(self.admin_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute('CREATE DATABASE "test"')
        return self

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_answers(url: str) -> bool:
    """True when `url` accepts a connection as given (no password prompt, no refusal), within two seconds."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def migrate(database_url: str, revision: str = "head", downgrade: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    (command.downgrade if downgrade else command.upgrade)(config, revision)


def create_api_key(database_url: str, name: str, tenant: str | None = None, *, admin: bool = False) -> str:
    """A new API key in the farm's database, made by the operator's own command (`python -m api.keys create`)."""
    args = [sys.executable, "-m", "api.keys", "create", "--name", name]
    args += ["--tenant", tenant] if tenant else []
    args += ["--admin"] if admin else []
    out = subprocess.run(
        args, cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def create_postgres_database(admin_url: str) -> str:
    """A fresh database on the local server for one test session; returns its URL."""
    import psycopg

    name = f"xtts_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Farm:
    """API + N workers against one Redis and one database, as `make run` starts them."""

    def __init__(
        self,
        *,
        redis_url: str,
        database_url: str,
        model_dir: Path,
        workers: int,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        api_key: str | None = None,
        api_host: str = "127.0.0.1",
    ) -> None:
        self.port = free_port()
        # Sent by the helpers below: with API keys on, an admin key lets them see the workers in /health.
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.database_url = database_url
        self.redis_url = redis_url
        self.voices_dir = log_dir / "voices"
        self.base_url = f"http://{api_host}:{self.port}"
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "XTTS_MODEL": "dev",
            "MODEL_DIR": str(model_dir),
            "NUM_THREADS": "1",
            "PORT": str(self.port),
            "HOST": api_host,
            "WORKER_HEARTBEAT_SECONDS": "1",
            "STREAM_READ_BLOCK_MS": "200",
            "PYTHONUNBUFFERED": "1",
            "VOICES_DIR": str(self.voices_dir),
            "MAX_UPLOAD_MB": "2",
            "MAX_REFERENCE_SECONDS": "20",
            "MAX_REFERENCE_TOTAL_SECONDS": "50",
            "CLIENT_TIMEOUT_SECONDS": "5",
            # Live requests are never refused for want of capacity, and a worker carries a full batch of live
            # streams (4 on a CPU), as it would measure on a faster machine: measured on one the suite keeps busy,
            # a one-thread worker's capacity is 1 stream, and every test of batched live streams would get them one
            # after another, passing or not by the order tests run in. The tests of capacity and refusal
            # (tests/farms.py's FREEZABLE) and the benchmark set them.
            "MAX_LIVE_WAIT_SECONDS": "0",
            "WORKER_LIVE_CAPACITY": "4",
            **(extra_env or {}),
        }
        self.n_workers = workers
        # Settings for the API process alone, over `env` (see restart_api).
        self.api_env: dict[str, str] = {}
        self.api: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self._logs: list[Any] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the process; closed in stop()
        self._logs.append(log)
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, name: str | None = None) -> str:
        """Starts a worker process (its Celery node is `{name}@host`); without a name, the first of w1, w2, ...
        that no worker of this farm is running under. Returns the name."""
        if name is None:
            running = {n for n, proc in self.workers.items() if proc.poll() is None}
            name = next(f"w{i}" for i in range(1, len(running) + 2) if f"w{i}" not in running)
        self.workers[name] = self._spawn(
            name,
            [
                str(VENV_BIN / "celery"),
                "-A",
                "workers.celery_app",
                "worker",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
            ],
            self.env,
        )
        return name

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        _terminate(proc)

    def start_api(self) -> None:
        self.api = self._spawn(
            "api", [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "api.wsgi:app"], {**self.env, **self.api_env}
        )

    def wait_for_api(self, timeout: float = 60) -> None:
        def answers() -> bool:
            self._check_api_runs()
            return requests.get(f"{self.base_url}/health", headers=self.headers, timeout=5).status_code in (200, 503)

        wait_for(answers, timeout, "the API to answer", interval=0.1)

    def _check_api_runs(self) -> None:
        """Fails at once, with the end of its log, when the API process has exited: no waiting out a deadline."""
        if self.api is None or self.api.poll() is not None:
            log = self.log_dir / "api.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ProcessExited(f"the API is not running; {log} ends:\n{tail}")

    def restart_api(self) -> None:
        """Stops the API (as a service manager would: SIGTERM, then its grace period) and starts it again with
        `api_env`; the workers keep running."""
        if self.api:
            _terminate(self.api)
        self.start_api()
        self.wait_for_api()

    def start(self) -> Farm:
        self.start_api()
        for i in range(self.n_workers):
            self.start_worker(f"w{i + 1}")
        self.wait_for_workers(self.n_workers)
        return self

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{self.base_url}/health", headers=self.headers, timeout=5).json()
        return body

    def workers_on(self, job_id: str) -> list[dict[str, Any]]:
        """The live workers synthesizing a segment of this job right now."""
        return [w for w in self.live_workers() if any(c["job_id"] == job_id for c in w.get("current") or [])]

    def live_workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self.health()["workers"]
        return workers

    def wait_for_workers(self, n: int, timeout: float = 180) -> list[dict[str, Any]]:
        def ready() -> tuple[list[dict[str, Any]]] | None:  # in a tuple: no live worker at all is an answer too
            self._check_api_runs()
            for name, proc in self.workers.items():
                if proc.poll() is not None:
                    raise ProcessExited(f"worker {name} exited with {proc.returncode}; see {self.log_dir}/{name}.log")
            workers = self.live_workers()
            return (workers,) if len(workers) == n else None

        return wait_for(ready, timeout, f"{n} live workers", interval=0.2)[0]

    def stop(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        if self.api:
            _terminate(self.api)
        for log in self._logs:
            log.close()

    def kill(self) -> None:
        """Stops every process at once (SIGKILL), for a farm whose jobs no longer matter: no grace periods."""
        for proc in [*self.workers.values(), *([self.api] if self.api else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.workers.clear()
        for log in self._logs:
            log.close()

    @contextlib.contextmanager
    def frozen_workers(self) -> Iterator[None]:
        """Every worker stopped (SIGSTOP) until the block ends: nothing is synthesized, nothing is taken from the
        broker, and what they hold stays held, as on a machine that stalls."""
        pids = [proc.pid for proc in self.workers.values() if proc.poll() is None]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    # --- HTTP helpers used by the tests -------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url + path

    def redis(self) -> redis.Redis:
        """A client of the farm's Redis (binary replies, as the farm's own code reads them)."""
        return redis.Redis.from_url(self.redis_url)

    def job(self, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """GET /jobs/{id}, with the farm's key, or `headers` (another tenant's key)."""
        response = requests.get(
            self.url(f"/jobs/{job_id}"), headers=self.headers if headers is None else headers, timeout=10
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_for_state(
        self, job_id: str, states: tuple[str, ...], timeout: float = 120, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The job once it is in one of `states` (asked with `headers` when given, as `job`)."""

        def reached() -> dict[str, Any]:
            job = self.job(job_id, headers)
            return job if job["state"] in states else {}

        return wait_for(reached, timeout, f"job {job_id} in {states}", 0.1)


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass
