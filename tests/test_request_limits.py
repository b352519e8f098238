"""MAX_CONCURRENT_REQUESTS: a request over it waits its turn for a bounded time, then gets a 429 with Retry-After;
a slot is released however its response ends."""

from __future__ import annotations

import threading
import time

import pytest

from api.limits import RETRY_AFTER_SECONDS, ConcurrencyLimit
from shared.errors import TooManyRequests
from tools.localfarm import wait_for

LATENTS = {"gpt_cond_latent": [[0.01] * 64] * 32, "speaker_embedding": [0.01] * 512}
INLINE_JOB = {"text": "Waiting for a worker.", "language": "en", "speaker_latents": LATENTS}


def test_a_request_over_the_limit_waits_its_turn() -> None:
    limit = ConcurrencyLimit(1, wait_seconds=10, max_waiting=2)
    held = limit.acquire()
    order: list[str] = []

    def waiter(name: str) -> None:
        limit.acquire().release()
        order.append(name)

    threads = [threading.Thread(target=waiter, args=(n,)) for n in ("first", "second")]
    threads[0].start()
    wait_for(lambda: limit.state().waiting == 1, 5, "the first waiter in line")
    threads[1].start()
    wait_for(lambda: limit.state().waiting == 2, 5, "the second waiter in line")
    assert order == []  # both wait while the slot is held
    held.release()
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second"]  # first come, first served
    assert limit.state().in_use == 0 and limit.state().waiting == 0


def test_a_waiting_request_gives_up_after_the_timeout_with_retry_after() -> None:
    limit = ConcurrencyLimit(1, wait_seconds=0.3)
    held = limit.acquire()
    started = time.monotonic()
    with pytest.raises(TooManyRequests) as refused:
        limit.acquire()
    assert 0.3 <= time.monotonic() - started < 2
    assert refused.value.headers() == {"Retry-After": str(RETRY_AFTER_SECONDS)}
    assert "waited 0.3 s" in refused.value.message
    assert limit.state().waiting == 0
    held.release()
    limit.acquire().release()


def test_when_the_line_is_full_a_request_is_refused_at_once() -> None:
    limit = ConcurrencyLimit(1, wait_seconds=30, max_waiting=1)
    held = limit.acquire()
    waiter = threading.Thread(target=lambda: limit.acquire().release())
    waiter.start()
    wait_for(lambda: limit.state().waiting == 1, 5, "a waiter in line")
    started = time.monotonic()
    with pytest.raises(TooManyRequests, match="1 more are waiting"):
        limit.acquire()
    assert time.monotonic() - started < 1
    held.release()
    waiter.join(5)
    assert limit.state().in_use == 0


def test_releasing_a_slot_twice_frees_it_once() -> None:
    limit = ConcurrencyLimit(2, wait_seconds=0)
    slot = limit.acquire()
    other = limit.acquire()
    slot.release()
    slot.release()
    assert limit.state().in_use == 1
    other.release()


def test_a_429_over_http_carries_retry_after_and_a_closed_stream_frees_its_slot(app_with) -> None:
    client = app_with(MAX_CONCURRENT_REQUESTS=1, REQUEST_QUEUE_TIMEOUT_SECONDS=0.2)
    # No worker: the job stays queued, and its stream holds the one slot after sending the WAV header.
    stream = client.post("/tts_stream", json=INLINE_JOB, buffered=False)
    assert stream.status_code == 200
    job_id = stream.headers["X-Session-Id"]
    started = time.monotonic()
    refused = client.get(f"/jobs/{job_id}/stream")
    assert 0.2 <= time.monotonic() - started < 2  # it waited its turn, then gave up
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    stream.close()  # what the WSGI server does when the client leaves: the slot is freed, the job cancelled
    assert client.get(f"/jobs/{job_id}").get_json()["state"] == "cancelled"
    for _ in range(5):  # HEAD never iterates the body; closing it (as a server does) must release its slot
        head = client.head(f"/jobs/{job_id}/stream")
        assert head.status_code == 200
        head.close()
    second = client.post("/tts_stream", json=INLINE_JOB, buffered=False)
    assert second.status_code == 200
    second.close()
