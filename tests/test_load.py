"""A bounded load run on loopback (tools/loadtest.py): a few hundred mixed requests from concurrent clients, some
reading slowly, some dropping their connection and resuming with their cursor, some leaving for good. Afterwards:
no 5xx, every job in a final state, every listener that stayed holding all the audio its job produced."""

from __future__ import annotations

import json

import pytest

from tests.farms import TWO_WORKERS
from tools import loadtest

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def test_a_few_hundred_mixed_requests_lose_nothing(farm_with) -> None:
    # The common two-worker farm, its API restarted with room for the load (settings only the API reads).
    farm = farm_with(**TWO_WORKERS, MAX_CONCURRENT_REQUESTS="64", MAX_JOBS_PER_TENANT="1000")
    summary = loadtest.run(farm.base_url, requests_total=200, concurrency=16, key=None, seed=7)
    print(json.dumps(summary, indent=2))
    assert summary["server_errors"] == 0
    assert summary["jobs_not_final"] == []
    assert summary["audio_lost"] == []
    assert summary["requests"] == 200 and summary["listeners_complete"] > 100
    assert set(summary["statuses"]) <= {"200", "202"}, summary["statuses"]
