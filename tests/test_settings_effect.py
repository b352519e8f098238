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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from shared.settings import Settings
from tests.test_flower import _listening_addresses
from tools.localfarm import ROOT, VENV_BIN, Farm, wait_for

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
    body = {"text": "A long one. " * 20, "language": "en", "speaker_id": "Claribel Dervla", "max_new_tokens": 300}
    job = requests.post(configured.url("/jobs"), json=body, timeout=30).json()
    try:
        with requests.get(configured.url(f"/jobs/{job['id']}/stream"), stream=True, timeout=30) as first:
            assert first.status_code == 200
            second = requests.get(configured.url(f"/jobs/{job['id']}/stream"), timeout=30)
            assert second.status_code == 429 and second.headers["Retry-After"]
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
