"""Every setting of the single-server XTTS API this farm replaces takes effect, set the way an operator sets it
(in the environment of the farm's real processes), and a bad value stops start-up with one line naming the variable.

One farm of its own (gunicorn API + one Celery worker) runs with every one of them set away from its default:

| variable | set to | shown by |
|---|---|---|
| PORT | a free port | the API listens there (and only on HOST) |
| DEBUG | true | debug records in the API's and the worker's logs |
| NUM_THREADS | 3 | torch's thread count in the worker, in /health |
| MAX_CONCURRENT_REQUESTS | 1 | a second synthesis response is refused (429) while one streams |
| CUSTOM_MODEL_PATH | the dev checkpoint | the worker serves it although XTTS_MODEL=xtts_v2 could not be had |
| USE_CPU | true | the worker's device (and `choose_device` with a GPU present, below) |
| SPEAKER_CACHE_TTL | 0 | the preloaded voice has expired at its first use |
| SPEAKER_CACHE_MAX_SIZE | 1 | a second voice evicts the first |
| PRELOAD_VOICES | narrator | the voice is in the worker's cache at start |
| VOICES_DIR | a folder | `voices_store.files import`/`export` read and write it when given no folder |

It also runs with LOG_FORMAT=json: every line of the API's log is a JSON object, with the job id on a job's lines.

Settings of the farm's own, each shown where it acts (no farm where none is needed):

| variable | shown by |
|---|---|
| MAX_REFERENCE_PARTS | 2: a clone request of 3 files is refused on the count (413), one of 2 is not |
| CLONE_TIMEOUT_SECONDS | 1: with a worker listed that takes no task, the clone request ends in a 504 naming it |
| JOB_MAX_INFLIGHT_SEGMENTS | a job's segments sent to the broker at once: the setting, or one per live worker (0) |
| SHUTDOWN_GRACE_SECONDS | when streams must end after SIGTERM (0: at once), and gunicorn's graceful_timeout |
| STREAM_IDLE_TIMEOUT_SECONDS | 0: a reader of a job that does not progress gives up at its next look; 3600: waits on |
| WORKER_HEARTBEAT_SECONDS | 1 on every farm: registry entries live 3 s and are renewed before they lapse |
| SEGMENT_HARD_TIME_LIMIT | 1: a worker's run whose model gives no audio fails the segment after 1 s, naming it |
| SEGMENT_SOFT_TIME_LIMIT | 0.001: a run that goes on past it fails the segment, naming it; the default completes |
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from celery import Celery

from api.delivery import Watchdog
from api.framing import wav_file
from api.lifecycle import Lifecycle
from celery_config import celery_config
from shared import jobs, registry, streams
from shared.db import session_scope
from shared.dispatch import dispatch
from shared.errors import SynthesisFailed
from shared.priority import Priority
from shared.redis_client import get_redis
from shared.settings import Settings, configure
from shared.tasks import VOICES_QUEUE
from tests.test_flower import _listening_addresses
from tools.localfarm import ROOT, VENV_BIN, Farm, RedisServer, migrate, wait_for

WIDTH = 64  # GPT width of the dev checkpoint


def _voice_json(seed: int) -> str:
    rng = np.random.default_rng(seed)
    return json.dumps(
        {
            "name": f"voice {seed}",
            "gpt_cond_latent": rng.normal(0, 0.1, (32, WIDTH)).round(4).tolist(),
            "speaker_embedding": rng.normal(0, 0.1, 512).round(4).tolist(),
        }
    )


@pytest.fixture(scope="module")
def configured_options(dev_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """farm_with's options for the configured farm (the same object for every test here, so they share one)."""
    folder = tmp_path_factory.mktemp("configured-farm")
    voices_dir = folder / "voices"
    voices_dir.mkdir()
    (voices_dir / "narrator.json").write_text(_voice_json(1))
    (voices_dir / "other.json").write_text(_voice_json(2))

    def import_voices(database_url: str) -> None:
        """What `make run` does before it starts the farm: import the voices found in VOICES_DIR (no folder given)."""
        subprocess.run(
            [sys.executable, "-m", "voices_store.files", "import"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url, "VOICES_DIR": str(voices_dir)},
            check=True,
            capture_output=True,
        )

    return {
        "prepare": import_voices,
        "XTTS_MODEL": "xtts_v2",  # not downloadable here (no licence accepted, no network): the custom path must win
        "CUSTOM_MODEL_PATH": str(dev_model_dir / "dev"),
        "MODEL_DIR": str(folder / "no-models"),
        "DEBUG": "true",
        "LOG_FORMAT": "json",
        "NUM_THREADS": "3",
        "USE_CPU": "true",
        "SPEAKER_CACHE_TTL": "0",
        "SPEAKER_CACHE_MAX_SIZE": "1",
        "PRELOAD_VOICES": "narrator",
        "VOICES_DIR": str(voices_dir),
        "MAX_CONCURRENT_REQUESTS": "1",
        "REQUEST_QUEUE_TIMEOUT_SECONDS": "0",
    }


@pytest.fixture
def configured(farm_with, configured_options: dict[str, Any]) -> Farm:
    """One worker (and the API) with every seed variable set away from its default, shared by this module's tests
    (its processes, and so its voice cache, live from the first of them to the last)."""
    return farm_with(workers=1, **configured_options)


def _worker(farm: Farm) -> dict:
    (worker,) = farm.live_workers()
    return worker


def _cache(farm: Farm) -> dict:
    (stats,) = requests.get(farm.url("/cache/stats"), timeout=10).json()["workers"]
    return stats


def _speak(farm: Farm, speaker_id: str) -> None:
    body = {"text": "A few words.", "language": "en", "speaker_id": speaker_id, "max_new_tokens": 6}
    created = requests.post(farm.url("/jobs"), json=body, timeout=30)
    assert created.status_code == 202, created.text
    assert farm.wait_for_state(created.json()["id"], ("succeeded", "failed"))["state"] == "succeeded"


def test_port_the_api_listens_on(configured: Farm) -> None:
    assert _listening_addresses(configured.port) == {"0100007F"}  # PORT, on HOST=127.0.0.1
    assert requests.get(configured.url("/health"), timeout=10).json()["status"] == "ok"


def test_custom_model_path_use_cpu_and_num_threads_reach_the_worker(configured: Farm, dev_model_dir: Path) -> None:
    model = _worker(configured)["model"]
    assert model["name"] == f"custom:{dev_model_dir / 'dev'}"
    assert model["device"] == "cpu" and model["torch_threads"] == 3


def test_use_cpu_keeps_a_gpu_machine_on_the_cpu() -> None:
    """The choice a worker makes on a machine with a GPU (this one has none, so it is shown on the function)."""
    from workers.batch_size import CPU_MAX_BATCH, GPU_MAX_BATCH, max_batch
    from workers.engine import choose_device

    assert choose_device(Settings(), cuda_available=True) == "cuda"
    assert choose_device(Settings(USE_CPU=True), cuda_available=True) == "cpu"
    assert choose_device(Settings(), cuda_available=False) == "cpu"
    assert max_batch(Settings(), cuda=True) == GPU_MAX_BATCH
    assert max_batch(Settings(USE_CPU=True), cuda=True) == CPU_MAX_BATCH


def test_preload_ttl_and_max_size_shape_the_voice_cache(configured: Farm) -> None:
    start = _cache(configured)
    assert (start["max_size"], start["ttl_seconds"]) == (1, 0)
    assert (start["size"], start["misses"], start["hits"]) == (1, 1, 0)  # PRELOAD_VOICES loaded it at start

    _speak(configured, "narrator")
    used = _cache(configured)
    assert used["expirations"] == start["expirations"] + 1  # SPEAKER_CACHE_TTL=0: the preloaded copy is too old
    assert (used["hits"], used["misses"]) == (0, 2)

    _speak(configured, "other")
    after = _cache(configured)
    assert after["evictions"] == used["evictions"] + 1 and after["size"] == 1  # SPEAKER_CACHE_MAX_SIZE=1


def test_voices_dir_is_where_voices_are_imported_from_and_exported_to(configured: Farm, tmp_path: Path) -> None:
    imported = requests.get(configured.url("/saved_voices/narrator"), timeout=10).json()
    assert imported["source"] == "import" and imported["name"] == "voice 1"
    elsewhere = tmp_path / "exported"
    env = {**configured.env, "VOICES_DIR": str(elsewhere)}
    run = subprocess.run(
        [sys.executable, "-m", "voices_store.files", "export"], cwd=ROOT, env=env, capture_output=True, check=True
    )
    assert sorted(p.name for p in elsewhere.iterdir()) == ["narrator.json", "other.json"], run.stderr


def test_max_concurrent_requests_bounds_the_synthesis_responses(configured: Farm) -> None:
    assert configured.health()["requests"]["limit"] == 1
    # min_new_tokens too: the first stream must outlast the second request for certain (about 14 s of audio), not
    # only as long as the model happens not to sample its stop token.
    body = {
        "text": "A long one. " * 20,
        "language": "en",
        "speaker_id": "Claribel Dervla",
        "min_new_tokens": 300,
        "max_new_tokens": 300,
    }
    job = requests.post(configured.url("/jobs"), json=body, timeout=30).json()
    try:
        with requests.get(configured.url(f"/jobs/{job['id']}/stream"), stream=True, timeout=30) as first:
            assert first.status_code == 200
            # The first stream holds its slot while it runs: its first event is audio (an `error` event would end
            # it and free the slot), and the API counts it.
            # (The lines' iterator is kept: a temporary one, finalized at once, would close the connection.)
            lines = first.iter_lines()
            opening = next(line for line in lines if line.startswith(b"event:"))
            assert opening == b"event: audio", (opening, first.raw.read(2000))
            assert configured.health()["requests"]["in_use"] == 1
            second = requests.get(configured.url(f"/jobs/{job['id']}/stream"), timeout=30)
            assert second.status_code == 429 and second.headers["Retry-After"], (second.status_code, second.text[:500])
        # Closing the first response frees its slot.
        wait_for(lambda: configured.health()["requests"]["in_use"] == 0, 10, "the slot to be released")
    finally:
        requests.delete(configured.url(f"/jobs/{job['id']}"), timeout=10)


def test_debug_and_json_logs(configured: Farm) -> None:
    _speak(configured, "Claribel Dervla")

    def records(name: str) -> list[dict]:  # LOG_FORMAT=json: every line is a JSON object
        lines = (configured.log_dir / f"{name}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    api = records("api")
    assert any(r["level"] == "DEBUG" and r["logger"] == "api.telemetry" for r in api)  # DEBUG=true
    queued = [r for r in api if r["message"].startswith("job queued")]
    assert queued and all(r["job_id"] and r["tenant"] == "default" for r in queued)
    job_id = queued[-1]["job_id"]
    assert any(r["logger"] == "gunicorn.access" and r.get("job_id") == job_id for r in api)

    worker = records("w1")
    about_job = [r for r in worker if r.get("job_id") == job_id]
    assert any(r["level"] == "DEBUG" and "starts" in r["message"] for r in about_job)
    assert any("received" in r["message"] for r in about_job) and any("succeeded" in r["message"] for r in about_job)


def test_debug_off_means_info(tmp_path: Path) -> None:
    import logging

    from shared import logs

    root = logging.getLogger()
    level = root.level
    try:
        logs.setup(Settings(DEBUG=False))
        assert root.getEffectiveLevel() == logging.INFO
        logs.setup(Settings(DEBUG=True))
        assert root.getEffectiveLevel() == logging.DEBUG
    finally:
        for handler in [h for h in root.handlers if isinstance(h, logs.FarmHandler)]:
            root.removeHandler(handler)
        root.setLevel(level)


# --- a bad value stops start-up with one line -----------------------------------------------------------------------
STARTS = {
    "api (gunicorn)": [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "api.wsgi:app"],
    "worker (celery)": [str(VENV_BIN / "celery"), "-A", "workers.celery_app", "worker"],
    "flower": ["scripts/flower.sh"],
    "migrations (alembic)": [str(VENV_BIN / "alembic"), "upgrade", "head"],
    "voices import": [sys.executable, "-m", "voices_store.files", "import"],
}
BAD = [
    ("NUM_THREADS", "abc", "valid integer"),
    ("PORT", "70000", "less than or equal to 65535"),
    ("DEBUG", "maybe", "valid boolean"),
    ("SPEAKER_CACHE_TTL", "-5", "greater than or equal to 0"),
    ("LOG_FORMAT", "xml", "'text' or 'json'"),
]


@pytest.mark.slow  # each program's whole start-up, ten times
@pytest.mark.parametrize("program", sorted(STARTS))
@pytest.mark.parametrize(("variable", "bad", "why"), BAD[:2])
def test_a_bad_value_stops_start_up_with_one_line_naming_it(program: str, variable: str, bad: str, why: str) -> None:
    env = {"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": "ops:s3cret-enough", variable: bad}
    result = subprocess.run(
        STARTS[program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert len(output) == 1, output
    assert output[0].startswith(f"invalid setting {variable}={bad!r}: ") and why in output[0]


@pytest.mark.parametrize(("variable", "bad", "why"), BAD)
def test_each_variable_refuses_a_bad_value(variable: str, bad: str, why: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from shared.settings import get_settings; get_settings()"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], variable: bad},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"invalid setting {variable}={bad!r}: ") and why in line


# --- the farm's own settings (not the official server's), shown where they act, without a farm where none is needed


def _wav(seconds: float = 1.0) -> bytes:
    t = np.arange(int(24000 * seconds)) / 24000
    return wav_file((np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes())


def _clone(client: Any, parts: int) -> Any:
    files = [(io.BytesIO(_wav()), f"part{i}.wav") for i in range(parts)]
    return client.post("/clone_speaker", data={"wav_file": files}, content_type="multipart/form-data")


def test_max_reference_parts_bounds_the_files_of_one_clone_request(app_with: Any) -> None:
    client = app_with(MAX_REFERENCE_PARTS=2)
    refused = _clone(client, 3)
    assert refused.status_code == 413, refused.get_json()
    # Refused on the count alone, before any file is read (the decoder's own check would say no count).
    assert refused.get_json()["error"]["message"] == "too many reference files: 3; at most 2 per request"
    # Two files pass the count (and go on to cloning, which finds no worker here: 503, not 413).
    allowed = _clone(client, 2)
    assert allowed.status_code == 503, allowed.get_json()
    assert allowed.get_json()["error"]["code"] == "no_workers"


@pytest.mark.timeout(60)  # the default CLONE_TIMEOUT_SECONDS (120 s) would end the test here
def test_clone_timeout_seconds_is_how_long_the_api_waits_for_a_clone(app_with: Any, api_settings: Settings) -> None:
    """A worker is listed (its registry entry) but takes no task, as a busy farm: the request gives up after
    CLONE_TIMEOUT_SECONDS with a 504 naming it."""
    client = app_with(CLONE_TIMEOUT_SECONDS=1)
    r = redis.Redis.from_url(api_settings.REDIS_URL)
    name = f"busy-{uuid.uuid4().hex[:8]}"
    registry.publish(r, name, {"name": name, "model": {"name": "dev"}}, ttl=60)
    listened_before = set(r.pubsub_channels("celery-task-meta-*"))
    try:
        response = _clone(client, 1)
    finally:
        registry.remove(r, name)
        r.delete(VOICES_QUEUE)  # the clone task nobody took
    assert response.status_code == 504, response.get_json()
    assert "CLONE_TIMEOUT_SECONDS=1" in response.get_json()["error"]["message"]
    # The API stopped waiting for that result: it no longer listens for it (a long-lived API would otherwise hold one
    # subscription and one result object per timed-out clone).
    assert set(r.pubsub_channels("celery-task-meta-*")) == listened_before


@pytest.mark.parametrize(
    ("configured", "live_workers", "priority", "sent"),
    [
        (2, 4, Priority.LIVE, 2),
        (3, 1, Priority.LIVE, 3),
        (1, 1, Priority.LIVE, 1),
        (0, 4, Priority.LIVE, 4),
        (0, 4, Priority.BULK, 4),
        (0, 1, Priority.LIVE, 2),
        (0, 1, Priority.BULK, 1),
        (0, 0, Priority.BULK, 1),
    ],
)
def test_job_max_inflight_segments_bounds_what_one_job_has_dispatched(
    redis_server: RedisServer, tmp_path: Path, configured: int, live_workers: int, priority: Priority, sent: int
) -> None:
    """A job of 6 segments gets JOB_MAX_INFLIGHT_SEGMENTS of them sent to the broker at once (0: one per live worker,
    at least one, and at least two for live work: a listener's next sentence is on its way while one plays); each
    finished segment lets one more go, never more than the window."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url)
    broker = redis_server.url.rsplit("/", 1)[0] + "/10"
    settings = Settings(DATABASE_URL=url, REDIS_URL=broker, JOB_MAX_INFLIGHT_SEGMENTS=configured)
    configure(settings)
    celery = Celery("test")
    celery.conf.update(celery_config(settings))
    queue = redis.Redis.from_url(broker)
    try:
        job_id = _queued_job(6, priority)
        assert dispatch(celery, job_id, live_workers) == list(range(sent))
        assert queue.llen(priority.queue) == sent  # what the broker holds
        assert dispatch(celery, job_id, live_workers) == []  # the window is full
        work = jobs.start_segment(job_id, 0, "worker", "run", 30)
        assert isinstance(work, jobs.SegmentWork)
        jobs.finish_segment(job_id, 0, "run")
        assert dispatch(celery, job_id, live_workers) == [sent]  # one done, one more
    finally:
        queue.flushdb()
        celery.close()
        configure(None)


def _queued_job(segments: int, priority: Priority = Priority.LIVE) -> str:
    with session_scope() as s:
        return jobs.create_job(
            s,
            origin="job",
            text="t",
            language="en",
            voice_kind="builtin",
            voice_ref="x",
            params={},
            segments=[f"segment {i}." for i in range(segments)],
            epoch=streams.current_epoch(get_redis()),
            priority=priority,
        ).id


def test_stream_idle_timeout_seconds_is_how_long_a_reader_waits_for_a_job_that_does_not_progress(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A reader of a job's audio checks it after every empty wait (api/delivery.py's Watchdog): a job that has not
    progressed for STREAM_IDLE_TIMEOUT_SECONDS ends the stream with an error; within it, the reader waits on."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url)
    own_redis = redis_server.url.rsplit("/", 1)[0] + "/11"
    for idle_timeout, gives_up in ((0, True), (3600, False)):
        configure(Settings(DATABASE_URL=url, REDIS_URL=own_redis, STREAM_IDLE_TIMEOUT_SECONDS=idle_timeout))
        try:
            watchdog = Watchdog(_queued_job(1))
            watchdog(0)  # the first look: the job's progress noted
            if gives_up:
                with pytest.raises(SynthesisFailed, match="no audio for 0 s"):
                    watchdog(0)
            else:
                watchdog(0)
        finally:
            get_redis().flushdb()
            configure(None)


def test_shutdown_grace_seconds_is_how_long_open_streams_go_on() -> None:
    """After SIGTERM, a stream ends at its next chunk once SHUTDOWN_GRACE_SECONDS are over (api/lifecycle.py), and
    gunicorn waits 10 s more for it (gunicorn.conf.py)."""
    for grace, ended in ((0.0, True), (3600.0, False)):
        configure(Settings(SHUTDOWN_GRACE_SECONDS=grace))
        try:
            leaving = Lifecycle()
            assert not leaving.streams_must_end()
            leaving.begin_shutdown()
            assert leaving.stopping and leaving.streams_must_end() is ended
        finally:
            configure(None)
    read = "import runpy; print(runpy.run_path('gunicorn.conf.py')['graceful_timeout'])"
    env = {**os.environ, "SHUTDOWN_GRACE_SECONDS": "7"}
    done = subprocess.run([sys.executable, "-c", read], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "17"


def test_worker_heartbeat_seconds_paces_the_registry_entries(farm: Farm) -> None:
    """The farm's workers run with WORKER_HEARTBEAT_SECONDS=1 (tools/localfarm.py): each registry entry lives 3
    heartbeats (3 s, not the default's 15) and is published again before it lapses, so the workers stay listed."""
    r = redis.Redis.from_url(farm.redis_url)
    names = [w["name"] for w in farm.live_workers()]
    assert len(names) == farm.n_workers
    ttls = [r.ttl(registry.PREFIX + name) for name in names]
    assert all(0 < ttl <= 3 for ttl in ttls), ttls
    deadline = time.monotonic() + 7  # more than twice an entry's life: only a renewed entry is still there
    while time.monotonic() < deadline:
        assert all(r.exists(registry.PREFIX + name) for name in names), "a worker's entry lapsed"
        time.sleep(0.2)  # sampling the entries, not waiting for something


# --- the segment time limits: a worker's run of a segment, in process (real model, Redis and database) -----------
@pytest.fixture
def segment_run(engine, redis_server: RedisServer, database_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`segment_run(scheduler_runs, **settings)`: one segment of a new job run by `workers.synthesis.run_segment`
    as a worker runs it, with the worker's settings changed; `scheduler_runs=False` leaves the batch scheduler
    unstepped (the model never answers). Returns (outcome, the job as SQL has it)."""
    import threading

    from voices_store.cache import VoiceCache
    from workers.leases import LeaseBook
    from workers.synthesis import Workshop, run_segment

    url = database_factory("sqlite")
    migrate(url)
    schedulers = []

    def run(scheduler_runs: bool, **overrides: Any) -> tuple[str, Any]:
        settings = Settings(DATABASE_URL=url, REDIS_URL=redis_server.url, **overrides)
        configure(settings)
        r = get_redis()
        with session_scope() as s:
            job = jobs.create_job(
                s,
                origin="job",
                text="A sentence for the limits.",
                language="en",
                voice_kind="builtin",
                voice_ref="Claribel Dervla",
                params={"min_new_tokens": 60, "max_new_tokens": 60, "stream_chunk_size": 4},
                segments=["A sentence for the limits."],
                epoch=streams.current_epoch(r),
            )
        scheduler = engine.new_scheduler(max_batch=1)
        schedulers.append(scheduler)
        if scheduler_runs:
            threading.Thread(target=scheduler.run, daemon=True).start()
        shop = Workshop(engine, scheduler, VoiceCache(4, 60), LeaseBook(), settings, "limits", threading.Event())
        outcome = run_segment(shop, r, job.id, 0).outcome.value
        return outcome, jobs.get_job(job.id)

    yield run
    for scheduler in schedulers:
        scheduler.stop()
    configure(None)


def test_segment_hard_time_limit_fails_a_segment_whose_model_gives_no_audio(segment_run) -> None:
    started = time.monotonic()
    outcome, job = segment_run(scheduler_runs=False, SEGMENT_HARD_TIME_LIMIT=1.0, SEGMENT_SOFT_TIME_LIMIT=1.0)
    waited = time.monotonic() - started
    assert outcome == "failed" and job.state == "failed"
    assert "SEGMENT_HARD_TIME_LIMIT=1 s" in job.error and waited < 15  # it gave up after 1 s, not the default 660


def test_segment_soft_time_limit_stops_a_run_that_goes_on_too_long(segment_run) -> None:
    # The model answers (chunks flow) but the run has used up its time after its first chunk.
    outcome, job = segment_run(scheduler_runs=True, SEGMENT_SOFT_TIME_LIMIT=0.001)
    assert outcome == "failed" and job.state == "failed"
    assert "SEGMENT_SOFT_TIME_LIMIT=0.001 s" in job.error
    fine, done = segment_run(scheduler_runs=True)  # the defaults: the same segment completes
    assert fine == "job_done" and done.state == "succeeded"
