"""What the farm tells an operator about its listeners (`/metrics` and `/health`): the silence they heard, measured
by the API against the playback clock of the audio it sent (shared/playback.py), and the audio the farm still has
to make, by class. Against a real worker, which the tests freeze (SIGSTOP) to make a listener wait (tests/farms.py's
FREEZABLE)."""

from __future__ import annotations

import time

import pytest
import requests

from shared.audio import speech_seconds
from tests.farms import FREEZABLE
from tests.prometheus import Samples, scrape, value
from tools.localfarm import tts_body, wait_for

SENTENCE = "A sentence of the bulk job, long enough to take a while to speak."
# How long the workers are frozen mid-stream: far more than the audio a listener can have ahead by then.
FREEZE_S = 2.5


def _playback(samples: Samples, priority: str = "live") -> dict[str, float]:
    names = ("stream_stall_seconds", "stream_deadline_misses", "streams_read", "streams_stalled")
    return {name: value(samples, f"xtts_{name}_total", priority=priority) for name in names}


def _grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def test_a_stream_the_workers_kept_waiting_counts_its_stall_and_one_on_time_does_not(farm_with) -> None:
    farm = farm_with(**FREEZABLE)
    before = _playback(scrape(farm.base_url))
    body = tts_body("A listener waits for this sentence while the workers are frozen.", 100, chunk=10)
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=120) as response:
        assert response.status_code == 200, response.text
        chunks = response.iter_content(chunk_size=None)
        next(chunks)  # the WAV header: sent before the first audio
        next(chunks)  # the first audio: the listener's playback clock starts
        with farm.frozen_workers():
            time.sleep(FREEZE_S)  # the listener's audio runs out while nothing is made
        rest = b"".join(chunks)
    assert rest, "the stream went on after the workers came back"

    def counted() -> dict[str, float]:  # the API records the stream as its reader closes
        grown = _grown(before, _playback(scrape(farm.base_url)))
        return grown if grown["streams_read"] >= 1 else {}

    grown = wait_for(counted, 30, "the stream to be counted")
    # The listener had under 1 s of audio ahead when the workers froze for 2.5 s.
    assert grown["stream_stall_seconds"] >= FREEZE_S - 1.0, grown
    assert grown["stream_deadline_misses"] >= 1 and grown["streams_stalled"] == 1, grown
    health = requests.get(farm.url("/health"), timeout=30).json()
    assert health["stall_seconds"]["live"] >= before["stream_stall_seconds"] + grown["stream_stall_seconds"] - 0.01
    assert health["deadline_misses"]["live"] >= 1

    # A job read once all its audio is made: every chunk is there before it is due.
    created = requests.post(farm.url("/jobs"), json={**body, "priority": "live"}, timeout=30)
    job_id = farm.wait_for_state(created.json()["id"], ("succeeded",), 120)["id"]
    before = _playback(scrape(farm.base_url))
    with requests.get(farm.url(f"/jobs/{job_id}/stream"), stream=True, timeout=60) as replay:
        assert replay.status_code == 200 and b"event: end" in b"".join(replay.iter_content(chunk_size=None))
    grown = wait_for(counted, 30, "the replay to be counted")
    assert grown == {**grown, "stream_stall_seconds": 0, "stream_deadline_misses": 0, "streams_stalled": 0}, grown


@pytest.mark.parametrize("priority", ["bulk", "live"])
def test_the_backlog_in_audio_seconds_follows_the_queued_text_and_drains(farm_with, priority: str) -> None:
    farm = farm_with(**FREEZABLE)
    text = " ".join([SENTENCE] * 4)
    with farm.frozen_workers():
        created = requests.post(farm.url("/jobs"), json={**tts_body(text, 20), "priority": priority}, timeout=30)
        assert created.status_code == 202, created.text
        segments = farm.job(created.json()["id"])["progress"]["segments_total"]
        samples = scrape(farm.base_url)
        queued = value(samples, "xtts_backlog_audio_seconds", priority=priority)
        other = value(samples, "xtts_backlog_audio_seconds", priority="live" if priority == "bulk" else "bulk")
        health = requests.get(farm.url("/health"), timeout=30).json()
    # Each segment's text as XTTS speaks it (the spaces between segments are not spoken).
    expected = speech_seconds(len(text) - (segments - 1))
    assert queued == pytest.approx(expected, abs=0.2) and other == 0, (queued, expected)
    assert health["backlog_audio_seconds"][priority] == pytest.approx(expected, abs=0.2)
    farm.wait_for_state(created.json()["id"], ("succeeded",), 180)
    assert value(scrape(farm.base_url), "xtts_backlog_audio_seconds", priority=priority) == 0
