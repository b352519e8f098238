"""A farm that knows its capacity: a new live request is told when its audio should start (from the workers' live
capacity and the live work ahead of it), and refused at once with 503 and Retry-After when that is further away
than MAX_LIVE_WAIT_SECONDS (api/admission.py). Bulk work is never refused for it.

The line is replayed in process (`expected_live_wait`); against a real worker whose capacity is pinned (tests/farms.py's
FREEZABLE) and which is frozen (SIGSTOP) while requests arrive, so that nothing moves the line meanwhile."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests

from api.admission import EXPECTED_START_HEADER, expected_live_wait, live_capacity
from api.framing import streaming_wav_header
from shared.audio import speech_seconds
from tests.audio import xtts_samples
from tests.farms import FREEZABLE, SharedFarm
from tools.localfarm import tts_body

# One segment each (under 250 characters): the line is counted in characters of unfinished text.
FIRST = "The first listener's sentence takes a good while to speak, so that the next one has to wait for it."
SECOND = "The second listener's sentence."


# --- the line, in process --------------------------------------------------------------------------------------------
def test_a_free_stream_means_no_wait() -> None:
    assert expected_live_wait(2, []) == 0
    assert expected_live_wait(2, [(True, 5.0)]) == 0


def test_the_new_job_takes_the_first_stream_to_come_free() -> None:
    assert expected_live_wait(2, [(True, 5.0), (True, 3.0)]) == 3.0
    # Two running (5 s and 3 s left), one waiting (4 s): it takes the 3 s stream, so the next free is at 5 s.
    assert expected_live_wait(2, [(True, 5.0), (True, 3.0), (False, 4.0)]) == 5.0
    assert expected_live_wait(1, [(True, 2.0), (False, 4.0), (False, 1.0)]) == 7.0


def test_running_jobs_hold_their_streams_before_waiting_ones_are_placed() -> None:
    # Two streams, both taken by running jobs (1 s and 6 s left); an older job still waiting (4 s) gets the first
    # to come free at 1 s, so the next is free at 5 s: not at 4 s, as if the waiting job held a stream from now.
    assert expected_live_wait(2, [(False, 4.0), (True, 1.0), (True, 6.0)]) == 5.0


def test_the_farm_capacity_is_unknown_while_a_live_worker_has_not_measured_its_own() -> None:
    measured, pinned, fresh = ({"batch": {"live_capacity": c}} for c in (2, 1, None))
    assert live_capacity([measured, pinned]) == 3
    assert live_capacity([measured, fresh]) is None  # the newcomer's room is not known: nothing refused for it
    assert live_capacity([]) is None


# --- against a worker ------------------------------------------------------------------------------------------------
def _submit(farm: SharedFarm, text: str, priority: str = "live") -> requests.Response:
    return requests.post(farm.url("/jobs"), json={**tts_body(text, 20), "priority": priority}, timeout=30)


def _wait_for_capacity(farm: SharedFarm) -> None:
    health = farm.health()
    assert health["live_capacity"] == 1, health  # pinned: reported before anything is measured


def test_a_live_request_is_told_when_it_starts_and_refused_past_the_longest_wait(farm_with) -> None:
    farm = farm_with(**FREEZABLE, MAX_LIVE_WAIT_SECONDS="5")
    _wait_for_capacity(farm)
    ahead = speech_seconds(len(FIRST))
    assert ahead > 5  # the second request would wait longer than MAX_LIVE_WAIT_SECONDS
    with farm.frozen_workers():
        first = _submit(farm, FIRST)
        assert first.status_code == 202, first.text
        assert float(first.headers[EXPECTED_START_HEADER]) == 0  # a stream is free

        asked = datetime.now().astimezone()
        first_status = farm.job(first.json()["id"])
        second = _submit(farm, SECOND)
        assert second.status_code == 503, second.text
        error = second.json()["error"]
        assert error["code"] == "farm_full" and "MAX_LIVE_WAIT_SECONDS=5" in error["message"]
        assert error["details"]["expected_wait_seconds"] == pytest.approx(ahead, abs=0.1)
        assert int(second.headers["Retry-After"]) == math.ceil(round(ahead, 1))
        assert EXPECTED_START_HEADER not in second.headers

        bulk = _submit(farm, SECOND, priority="bulk")  # nobody listens: it waits for whatever is free
        assert bulk.status_code == 202 and EXPECTED_START_HEADER not in bulk.headers
    # The first one waits for nobody: it should start at once (it is frozen, but the farm cannot know that).
    assert abs((datetime.fromisoformat(first_status["expected_start"]) - asked).total_seconds()) < 2.0
    for job in (first.json(), bulk.json()):
        assert farm.wait_for_state(job["id"], ("succeeded",), 120)["state"] == "succeeded"


def test_a_live_request_that_may_wait_is_admitted_with_its_expected_start(farm_with) -> None:
    farm = farm_with(**FREEZABLE, MAX_LIVE_WAIT_SECONDS="60")
    _wait_for_capacity(farm)
    ahead = speech_seconds(len(FIRST))
    with farm.frozen_workers():
        first = _submit(farm, FIRST)
        second = _submit(farm, SECOND)
        assert second.status_code == 202, second.text
        assert float(second.headers[EXPECTED_START_HEADER]) == pytest.approx(ahead, abs=0.1)
        asked = datetime.now().astimezone()
        status = farm.job(second.json()["id"])
    expected_start = datetime.fromisoformat(status["expected_start"])
    assert (expected_start - asked).total_seconds() == pytest.approx(ahead, abs=2.0)
    for job in (first.json(), second.json()):
        assert farm.wait_for_state(job["id"], ("succeeded",), 120)["state"] == "succeeded"
    assert farm.job(second.json()["id"])["expected_start"] is None  # started: nothing more to expect


def _open_stream(farm: SharedFarm, text: str) -> requests.Response:
    """A live /tts_stream whose headers are in (sent with its WAV header, before any audio), its body not read."""
    body = tts_body(text, 40, 8)
    response = requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=120)
    assert response.status_code == 200, response.text
    return response


def test_a_worker_at_its_live_capacity_leaves_the_next_live_stream_in_the_broker(farm_with) -> None:
    """Two live streams at once on a worker that carries one: the second is told to wait for the first, waits in
    the broker (the worker's prefetch count is its live capacity), and starts once the first has finished, so the
    first never shares its worker. Both get all their audio."""
    farm = farm_with(**FREEZABLE, MAX_LIVE_WAIT_SECONDS="60")
    _wait_for_capacity(farm)
    with farm.frozen_workers():  # both requests in before the worker may take either
        first, second = _open_stream(farm, FIRST), _open_stream(farm, SECOND)
    with first, second, ThreadPoolExecutor(max_workers=2) as pool:
        first_pcm, second_pcm = pool.map(
            lambda response: response.content[len(streaming_wav_header()) :], (first, second)
        )
    assert float(first.headers[EXPECTED_START_HEADER]) == 0
    assert float(second.headers[EXPECTED_START_HEADER]) == pytest.approx(speech_seconds(len(FIRST)), abs=0.1)
    assert len(first_pcm) // 2 == len(second_pcm) // 2 == xtts_samples(40)
    one, two = (farm.job(response.headers["X-Session-Id"])["timestamps"] for response in (first, second))
    assert datetime.fromisoformat(two["started"]) >= datetime.fromisoformat(one["finished"]), (one, two)
