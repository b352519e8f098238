"""Fixtures: real Redis, real databases (SQLite and PostgreSQL), real Celery workers running the
generated dev checkpoint, and the real API over HTTP.

Farms are shared (tests/farms.py): `farm` (two workers), `keyed_farm` (API keys required) or `farm_with(...)` for a
configuration of tests/farms.py, each reset before every test. Their database is SQLite unless the test (or its
module) is marked `@pytest.mark.backends("sqlite", "postgresql")`: then it runs once on each.
A test is in the `farm` tier when its fixtures start farm processes (FARM_ROOTS, found through every fixture it
depends on); the others are `fast`, and may start none: a fast test that starts a worker or an API fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.settings import Settings, configure
from tests.farms import BACKENDS, TWO_WORKERS, FarmInFastTest, FarmPool, SharedFarm, farm_spec
from tests.listeners import Listeners, running_listeners
from tools.localfarm import (
    DEV_SPEAKER,
    ROOT,
    Farm,
    PostgresCluster,
    RedisSentinels,
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    migrate,
    postgres_answers,
)
from tools.netfarm import NetFarm, NetHosts

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# The fixtures that start processes of a farm (Celery workers, the API, Flower); every fixture that depends on one,
# however indirectly, does too.
FARM_ROOTS = frozenset({"farm_pool", "flower", "sentinel_farm", "net_farm"})
# The fixture that loads the model in the test process: a test that depends on it runs the model for seconds on a
# CPU (it is marked `model`: `make test` runs it, `make test-fast` does not).
MODEL_ROOTS = frozenset({"engine"})
FARM_EVENTS = pytest.StashKey[Counter[str]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests whose fixtures start farm processes are marked `farm`; the others form the fast tier. Tests whose
    fixtures load the model in process are marked `model` too."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if FARM_ROOTS & fixtures:
            item.add_marker(pytest.mark.farm)
        elif not item.get_closest_marker("farm"):
            item.add_marker(pytest.mark.fast)
        if MODEL_ROOTS & fixtures:
            item.add_marker(pytest.mark.model)
    cuda_tests = [item for item in items if item.get_closest_marker("cuda")]
    if cuda_tests and not _cuda_available():
        for item in cuda_tests:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs it on one)"))


def _cuda_available() -> bool:
    import torch  # only when a collected test is marked `cuda`: torch takes seconds to import

    return bool(torch.cuda.is_available())


class _FarmOrder:
    """Runs every test on SQLite before any on PostgreSQL, each part in the files' order: a farm serves one stretch
    of tests and is rarely stopped for room and started again (tests/farms.py keeps a few running)."""

    @pytest.hookimpl(trylast=True)  # after pytest's own reordering, which would put parametrized tests first
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        def key(item: pytest.Item) -> tuple[bool, str, int]:
            callspec = getattr(item, "callspec", None)
            path, line, _ = item.location
            return (bool(callspec) and callspec.params.get("backend") == "postgresql", path, line or 0)

        items.sort(key=key)  # stable: a function's parametrizations keep their order


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_FarmOrder(), "farm-order")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    events = config.stash.get(FARM_EVENTS, None)
    if events:
        terminalreporter.write_line("shared farms: " + ", ".join(f"{n} {what}" for what, n in sorted(events.items())))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.backends(...)` runs a test once per database backend named (the `backend` fixture)."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker and "backend" in metafunc.fixturenames:
        unknown = set(marker.args) - set(BACKENDS)
        assert marker.args and not unknown, f"backends({marker.args}): choose among {BACKENDS}"
        metafunc.parametrize("backend", marker.args, scope="session")


def _refused(what: str) -> Callable[..., Any]:
    def refuse(*_: Any, **__: Any) -> Any:
        raise FarmInFastTest(
            f"a test of the fast tier tried to {what}: its fixtures must depend on one of {sorted(FARM_ROOTS)}"
        )

    return refuse


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """The fast tier's promise, kept at run time: while a fast test runs (its fixtures included), starting a
    worker or an API raises FarmInFastTest."""
    if item.get_closest_marker("farm"):
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Farm, "start_worker", _refused("start a Celery worker"))
        patch.setattr(Farm, "start_api", _refused("start the API"))
        return (yield)


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    """The random-weight checkpoint in the XTTS-v2 layout, generated by the project's own command."""
    model_dir = ROOT / ".cache" / "test-models"
    subprocess.run([sys.executable, "-m", "workers.devmodel", "--out", str(model_dir / "dev")], cwd=ROOT, check=True)
    return model_dir


@pytest.fixture(scope="session")
def engine(dev_model_dir: Path):  # type: ignore[no-untyped-def]
    """The dev checkpoint loaded in this process, once for every unit test of the model code; they share it, so
    they leave it as they found it. It runs on the torch threads of the module using it (TORCH_THREADS)."""
    import torch

    from workers.engine import XttsEngine, exact_float32

    exact_float32()  # the tests compare float32 results down to rounding: no TF32 on a GPU (see its docstring)
    threads = torch.get_num_threads()
    loaded = XttsEngine.load(Settings(XTTS_MODEL="dev", MODEL_DIR=str(dev_model_dir), NUM_THREADS=threads))
    torch.set_num_threads(threads)
    return loaded


@pytest.fixture(scope="module", autouse=True)
def torch_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module that sets TORCH_THREADS runs its tests on that many torch threads (the count is restored after)."""
    wanted = getattr(request.module, "TORCH_THREADS", None)
    if wanted is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server the tests may create databases on: TEST_POSTGRES_URL if set; else the local server on
    port 5432 if it lets user `postgres` in without a password; else a throwaway cluster of the tests' own, deleted
    at the end (the machine's PostgreSQL configuration is never touched)."""
    configured = os.environ.get("TEST_POSTGRES_URL")
    if configured or postgres_answers(DEFAULT_POSTGRES_URL):
        yield configured or DEFAULT_POSTGRES_URL
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster.admin_url
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator:
    """Makes empty databases of either backend; drops them at the end of the session."""
    made: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp(backend) / 'farm.db'}"
        url = create_postgres_database(postgres_admin_url)
        made.append(url)
        return url

    yield make
    for url in made:
        drop_postgres_database(postgres_admin_url, url)


@pytest.fixture(scope="session")
def backend() -> str:
    """The database backend a test's farm (or database) uses: SQLite, unless the test is marked `backends(...)`,
    which runs it once per backend named."""
    return "sqlite"


@pytest.fixture(scope="session")
def farm_pool(
    request: pytest.FixtureRequest,
    dev_model_dir: Path,
    database_factory: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FarmPool]:
    pool = FarmPool(dev_model_dir, database_factory, tmp_path_factory.mktemp)
    request.config.stash[FARM_EVENTS] = pool.events
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def farm_with(farm_pool: FarmPool, backend: str) -> Iterator[Callable[..., SharedFarm]]:
    """`farm_with(workers=1, **options)`: a shared farm of that configuration on the test's backend, idle and empty
    (tests/farms.py). Options: `persistent_redis`, `database_proxy`, `api_keys`, `prepare` (see FarmSpec) and
    settings in upper case, as strings; tests share a configuration through the dictionaries in tests/farms.py
    (`farm_with(**SHORT_LEASES)`). After the test, the farm's jobs are deleted at once, so none runs on while
    other tests do."""
    handed: list[SharedFarm] = []

    def get(workers: int = 1, **options: Any) -> SharedFarm:
        spec, api_env = farm_spec(backend, workers, options)
        farm = farm_pool.get(spec, api_env)
        handed.append(farm)
        return farm

    yield get
    for farm in handed:
        with contextlib.suppress(redis.RedisError):  # a test that failed with its Redis stopped: ready() restarts it
            farm.clear()


@pytest.fixture
def farm(farm_with: Callable[..., SharedFarm]) -> SharedFarm:
    """The common farm: two workers, default settings but a 60 s lease (tests/farms.py's TWO_WORKERS)."""
    return farm_with(**TWO_WORKERS)


@pytest.fixture
def keyed_farm(farm_with: Callable[..., SharedFarm]) -> SharedFarm:
    """A farm with API keys required (as in docker-compose.yml): one worker, keys for tenants `alice` and `bob` in
    `keyed_farm.api_keys`, and an admin key its helpers send. More keys: `tools.localfarm.create_api_key` on
    `keyed_farm.database_url` (deleted at the next reset)."""
    return farm_with(workers=1, api_keys=("alice", "bob"), API_KEYS_REQUIRED="true")


@pytest.fixture
def speaker(farm: Farm) -> str:
    """A built-in speaker of the dev checkpoint (it carries real XTTS-v2 speaker names)."""
    return DEV_SPEAKER


@pytest.fixture(scope="session")
def lavfi_audio(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., bytes]:
    """Files made by ffmpeg from a lavfi source with any encoder arguments, for what make_audio does not cover
    (codecs, layouts, hours of silence); each made once per session."""
    folder = tmp_path_factory.mktemp("lavfi")

    def make(name: str, source: str, *args: str) -> bytes:
        out = folder / name
        if not out.exists():
            subprocess.run(
                ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, *args, str(out)], check=True
            )
        return out.read_bytes()

    return make


@pytest.fixture(scope="session")
def make_audio(tmp_path_factory: pytest.TempPathFactory):
    """Reference recordings made with ffmpeg: any container, rate, channel count, length and content."""
    folder = tmp_path_factory.mktemp("audio")
    made: dict[tuple, bytes] = {}

    def make(
        fmt: str = "wav",
        seconds: float = 3.0,
        rate: int = 22050,
        channels: int = 1,
        freq: int = 220,
        silent: bool = False,
        lead_silence: float = 0.0,
    ) -> bytes:
        key = (fmt, seconds, rate, channels, freq, silent, lead_silence)
        if key not in made:
            out = folder / f"ref-{len(made)}.{fmt}"
            tone = f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"
            source = f"anullsrc=r={rate}:cl=mono,atrim=duration={seconds}" if silent else tone
            if lead_silence:  # silence first, then the tone: little actual sound
                source = f"{tone},adelay={int(lead_silence * 1000)}"
            codec = {"ogg": ["-c:a", "libopus"], "m4a": ["-c:a", "aac"], "mp3": ["-c:a", "libmp3lame"]}.get(fmt, [])
            subprocess.run(
                [
                    "ffmpeg",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    source,
                    "-ac",
                    str(channels),
                    *codec,
                    str(out),
                ],
                check=True,
            )
            made[key] = out.read_bytes()
        return made[key]

    return make


@pytest.fixture(scope="session")
def api_settings(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for an in-process API (Flask's test client): the real Redis and a migrated SQLite database,
    and no worker at all."""
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'api.db'}"
    migrate(url)
    return Settings(
        REDIS_URL=redis_server.url.rsplit("/", 1)[0] + "/9",
        DATABASE_URL=url,
        MAX_UPLOAD_MB=2,
        MAX_REFERENCE_SECONDS=20,
        STREAM_READ_BLOCK_MS=100,
    )


@pytest.fixture(scope="session")
def api_app(api_settings: Settings) -> Iterator:
    from api.app import create_app

    yield create_app(api_settings)
    configure(None)


@pytest.fixture
def client(api_app, api_settings: Settings) -> Iterator:
    """Flask's test client on the API, for request validation that needs no worker."""
    configure(api_settings)  # the app's settings are the process's: another test may have changed them
    yield api_app.test_client()
    configure(None)


@pytest.fixture
def sentinel_farm(dev_model_dir: Path, tmp_path: Path) -> Iterator[tuple[Farm, RedisSentinels]]:
    """A farm of one worker whose Redis is a master, its replica and three sentinels. Its REDIS_URL names no
    server (port 1): every process finds Redis through the sentinels or not at all."""
    sentinels = RedisSentinels()  # stops what it started if it fails
    database_url = f"sqlite:///{tmp_path / 'farm.db'}"
    env = {"REDIS_SENTINELS": sentinels.addresses, "REDIS_SENTINEL_MASTER": sentinels.name}
    env |= {"SEGMENT_LEASE_SECONDS": "4", "REAPER_INTERVAL_SECONDS": "1", "WORKER_MAX_BATCH": "4"}
    farm = Farm(
        redis_url="redis://127.0.0.1:1/0",
        database_url=database_url,
        model_dir=dev_model_dir,
        workers=1,
        log_dir=tmp_path,
        extra_env=env,
    )
    try:
        migrate(database_url)
        farm.start()
        farm.wait_for_api()
        yield farm, sentinels
    finally:
        farm.stop()
        sentinels.cleanup()


@pytest.fixture
def net_farm(dev_model_dir: Path, tmp_path: Path) -> Iterator[NetFarm]:
    """A farm on three hosts of its own (tools/netfarm.py): Redis, PostgreSQL and the API on one, a worker on each
    of the other two. Needs root; torn down whatever the test did."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2")
    net = NetHosts()
    farm = None
    try:
        farm = NetFarm(net, tmp_path, dev_model_dir, {"SEGMENT_LEASE_SECONDS": "4", "REAPER_INTERVAL_SECONDS": "1"})
        farm.start()
        yield farm
    finally:
        if farm is not None:
            farm.cleanup()
        net.cleanup()


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[Listeners]:
    """An HTTP server, a TCP listener that never answers and a FIFO, each recording any attempt to reach it."""
    with running_listeners(tmp_path) as found:
        yield found


@pytest.fixture
def app_with(api_settings: Settings, tmp_path: Path) -> Iterator:
    """Makes an in-process API (Flask's test client) with its own migrated SQLite database and some settings
    changed, for tests of limits that must not see other tests' jobs: `client = app_with(MAX_JOBS_PER_TENANT=1)`."""

    def make(**overrides: object):  # type: ignore[no-untyped-def]
        from api.app import create_app

        url = f"sqlite:///{tmp_path / f'app-{uuid.uuid4().hex[:8]}.db'}"
        migrate(url)
        settings = api_settings.model_copy(update={"DATABASE_URL": url, **overrides})
        return create_app(settings).test_client()

    yield make
    configure(None)
