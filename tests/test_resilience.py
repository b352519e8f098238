"""A restarted Redis or a crashed worker leaves every job in a true, visible state (on both database backends)."""

from __future__ import annotations

import pytest
import requests

from tests.farms import SharedFarm
from tools.localfarm import tts_body

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _job(tokens: int, chunk: int = 5) -> dict:
    return tts_body("A job that outlives a crash.", tokens, chunk)


def test_redis_restart_fails_lost_jobs_visibly_and_the_farm_recovers(farm: SharedFarm) -> None:
    redis_server = farm.redis_server
    assert not redis_server.persistent
    job = requests.post(farm.url("/jobs"), json=_job(400), timeout=30).json()
    farm.wait_for_state(job["id"], ("running",), 60)

    redis_server.stop()
    down = requests.post(farm.url("/jobs"), json=_job(10), timeout=30)
    assert down.status_code == 503 and down.json()["error"]["code"] == "redis_unavailable"
    health = requests.get(farm.url("/health"), timeout=30)
    assert health.status_code == 503 and health.json()["redis"]["ok"] is False
    assert health.json()["status"] == "unavailable" and "Redis not answering" in health.json()["reason"]
    redis_server.start()  # empty: queue entries, streams and the epoch are gone

    status = farm.job(job["id"])
    assert status["state"] == "failed"
    assert "Redis restarted" in status["error"] and status["timestamps"]["finished"]
    # The farm itself recovers: the worker re-registers and new jobs run.
    farm.wait_for_workers(farm.n_workers, timeout=60)
    again = requests.post(farm.url("/jobs"), json=_job(10), timeout=30).json()
    assert farm.wait_for_state(again["id"], ("succeeded",), 120)["state"] == "succeeded"
    assert farm.job(job["id"])["state"] == "failed"  # and the lost one stays failed
