"""No request holds a MAX_CONCURRENT_REQUESTS slot or a thread past a bounded time, whatever its method; a client
that leaves /tts_stream or /tts cancels its job. Against the running farm (gunicorn, workers)."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import text

from shared.db import make_engine
from tests.farms import TWO_WORKERS
from tools.localfarm import DEV_SPEAKER, Farm, tts_body, wait_for


def _body(speaker: str, tokens: int, text: str = "Holding on to nothing.", chunk: int = 5) -> dict[str, Any]:
    return tts_body(text, tokens, chunk, speaker)


def _slots(farm: Farm) -> dict[str, int]:
    slots: dict[str, int] = farm.health()["requests"]
    return slots


def _timed(what: str, call: Any) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    print(f"hostile: {what}: {response.status_code} in {elapsed:.3f} s")
    return response, elapsed


# The seed's limit of 10 slots (the default is 2500 now): what these tests fill, a request at a time.
SEED_LIMIT: dict[str, Any] = {**TWO_WORKERS, "MAX_CONCURRENT_REQUESTS": "10"}


@pytest.fixture
def ten_slots(farm_with: Callable[..., Farm]) -> Farm:
    """The common farm with its API serving 10 synthesis responses at once."""
    return farm_with(**SEED_LIMIT)


def test_head_requests_on_streams_hold_no_slot(ten_slots: Farm) -> None:
    """Werkzeug answers HEAD by closing the response without iterating it: ten HEADs used to take every slot."""
    farm, speaker = ten_slots, DEV_SPEAKER
    running = requests.post(farm.url("/jobs"), json=_body(speaker, 200), timeout=30).json()
    done = requests.post(farm.url("/jobs"), json=_body(speaker, 5), timeout=30).json()
    farm.wait_for_state(done["id"], ("succeeded",))
    limit = _slots(farm)["limit"]
    started = time.perf_counter()
    for job in [running, done] * (limit + 2):
        head = requests.head(farm.url(job["stream_url"]), timeout=10)
        assert head.status_code == 200 and head.headers["Content-Type"].startswith("text/event-stream")
    print(f"hostile: {2 * (limit + 2)} HEAD /jobs/{{id}}/stream: 200 in {time.perf_counter() - started:.3f} s in all")
    wait_for(lambda: _slots(farm)["in_use"] == 0, 5, "every slot to be free")
    response, _ = _timed("/tts after the HEADs", lambda: requests.post(farm.url("/tts"), json=_body(speaker, 5)))
    assert response.status_code == 200, response.text
    requests.delete(farm.url(f"/jobs/{running['id']}"), timeout=10)


def test_a_cursor_past_the_end_answers_at_once(farm: Farm, speaker: str) -> None:
    """It used to hold a slot for STREAM_IDLE_TIMEOUT_SECONDS, waiting for audio that never comes."""
    job = requests.post(farm.url("/jobs"), json=_body(speaker, 10), timeout=30).json()
    status = farm.wait_for_state(job["id"], ("succeeded",))
    chunks = status["segments"][0]["chunks"]
    for cursor in ("0-999999999", f"0-{chunks + 1}", "1-1", "999999999-0"):
        response, elapsed = _timed(
            f"cursor {cursor} on a finished job",
            lambda cursor=cursor: requests.get(farm.url(job["stream_url"]), params={"cursor": cursor}, timeout=10),
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"
        assert elapsed < 2
    # The last chunk's own id is a fine cursor: nothing is left, the stream ends at once.
    response, elapsed = _timed(
        "cursor at the last chunk",
        lambda: requests.get(farm.url(job["stream_url"]), params={"cursor": f"0-{chunks}"}, timeout=10),
    )
    assert response.status_code == 200 and response.text.startswith("event: end") and elapsed < 2
    assert _slots(farm)["in_use"] == 0


def test_sixteen_concurrent_clients_wait_their_turn_instead_of_429(ten_slots: Farm) -> None:
    """More synthesis requests than MAX_CONCURRENT_REQUESTS (10): the others wait for a slot, none is refused."""
    farm, speaker = ten_slots, DEV_SPEAKER

    def one(i: int) -> int:
        response = requests.post(farm.url("/tts"), json=_body(speaker, 5, f"Client number {i}."), timeout=120)
        return response.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(16)))
    assert statuses == [200] * 16


def _connect(farm: Farm) -> socket.socket:
    host, port = farm.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _job_id_by_text(farm: Farm, marker: str) -> str | None:
    engine = make_engine(farm.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT id FROM jobs WHERE text = :t"), {"t": marker}).scalar_one_or_none()
    finally:
        engine.dispose()


# Several segments of 400 tokens each: far more work than the seconds the API may take to notice a departed client,
# so a job that ends "succeeded" means the departure was missed, not that the dev model outran it.
LONG_TEXT = " ".join(f"Sentence number {i} of a long text that nobody will stay to hear." for i in range(16))


def _assert_cancelled_and_slot_freed(farm: Farm, job_id: str, endpoint: str) -> None:
    """The client of `endpoint` has just left: its job ends cancelled (not run to the end), its slot is freed."""
    left = time.perf_counter()
    status = farm.wait_for_state(job_id, ("cancelled", "succeeded"), timeout=30)
    assert status["state"] == "cancelled", status
    print(f"{endpoint} client left: its job was cancelled {time.perf_counter() - left:.2f} s later")
    wait_for(lambda: _slots(farm)["in_use"] == 0, 10, "the request's slot to be free")


def test_a_client_leaving_tts_stream_cancels_its_job(farm: Farm, speaker: str) -> None:
    body = _body(speaker, 400, LONG_TEXT)
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=60) as response:
        job_id = response.headers["X-Session-Id"]
        pieces = response.iter_content(chunk_size=None)
        received = next(pieces)
        while len(received) <= 44:  # the header, then the first audio
            received += next(pieces)
    # The client is gone (connection closed mid-stream): the job is cancelled, its worker freed.
    _assert_cancelled_and_slot_freed(farm, job_id, "/tts_stream")


def test_a_client_leaving_tts_while_it_waits_cancels_its_job(farm: Farm, speaker: str) -> None:
    """/tts writes nothing until the WAV is complete; the API notices the closed connection while it waits."""
    marker = f"A whole-file request that is abandoned {time.time_ns()}. {LONG_TEXT}"
    body = json.dumps(_body(speaker, 400, marker)).encode()
    sock = _connect(farm)
    sock.sendall(
        b"POST /tts HTTP/1.1\r\nHost: farm\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    job_id = wait_for(lambda: _job_id_by_text(farm, marker), 30, "the /tts job to exist")
    farm.wait_for_state(job_id, ("running",), timeout=60)
    sock.close()
    _assert_cancelled_and_slot_freed(farm, job_id, "/tts")


def test_a_jobs_job_runs_on_when_its_stream_listener_leaves(farm: Farm, speaker: str) -> None:
    job = requests.post(farm.url("/jobs"), json=_body(speaker, 60), timeout=30).json()
    with requests.get(farm.url(job["stream_url"]), stream=True, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith(b"event: audio"):
                break
    assert farm.wait_for_state(job["id"], ("succeeded", "cancelled"))["state"] == "succeeded"


def test_a_stream_listener_that_leaves_while_waiting_frees_its_slot(farm: Farm, speaker: str) -> None:
    """A listener of a job queued behind others, waiting for audio, leaves: its slot is freed within a read block,
    not when the job finally produces audio."""
    slots = sum(w["batch"]["max"] for w in farm.live_workers())  # every batch slot busy: the job has to wait
    blockers = [requests.post(farm.url("/jobs"), json=_body(speaker, 150), timeout=30).json() for _ in range(slots)]
    queued = requests.post(farm.url("/jobs"), json=_body(speaker, 5), timeout=30).json()
    listener = _connect(farm)
    listener.sendall(f"GET {queued['stream_url']} HTTP/1.1\r\nHost: farm\r\n\r\n".encode())
    wait_for(lambda: _slots(farm)["in_use"] == 1, 10, "the listener to hold a slot")
    listener.close()
    wait_for(lambda: _slots(farm)["in_use"] == 0, 5, "the listener's slot to be freed")
    assert farm.job(queued["id"])["state"] in ("queued", "running")  # the job itself runs on
    for job in (*blockers, queued):
        requests.delete(farm.url(f"/jobs/{job['id']}"), timeout=10)


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    """The status and raw reply of an HTTP response on a raw socket (read until the server closes or 10 s)."""
    sock.settimeout(10)
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except TimeoutError:
        pass
    return int(reply.split(b" ", 2)[1]), reply


def test_a_client_that_stops_sending_its_body_is_answered_408(farm: Farm) -> None:
    """Its thread waited on the socket for ever; now the body must arrive within CLIENT_TIMEOUT_SECONDS (5 here)."""
    for name, trickle in (("stalled body", False), ("trickled body", True)):
        sock = _connect(farm)
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: farm\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.perf_counter()
        while trickle and not select.select([sock], [], [], 1.0)[0]:
            sock.sendall(b" ")  # one byte a second, until the server answers: each read progresses, the body never ends
        status, reply = _read_status(sock)
        elapsed = time.perf_counter() - started
        sock.close()
        print(f"hostile: {name}: {status} after {elapsed:.1f} s")
        assert status == 408 and b"CLIENT_TIMEOUT_SECONDS=5" in reply
        assert 4 < elapsed < 10
    wait_for(lambda: _slots(farm)["in_use"] == 0, 5, "no slot held")


def test_a_request_may_work_longer_than_the_client_timeout_once_its_body_is_in(farm: Farm, speaker: str) -> None:
    """CLIENT_TIMEOUT_SECONDS (5 here) bounds receiving the body, not the work: a long /tts sharing the workers
    with two long jobs works well past it, and is neither cut off nor taken for a client that left."""
    blockers = [requests.post(farm.url("/jobs"), json=_body(speaker, 400), timeout=30).json() for _ in range(2)]
    started = time.perf_counter()
    response = requests.post(farm.url("/tts"), json=_body(speaker, 250, "Patience."), timeout=120)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert elapsed > 5, f"the request took {elapsed:.1f} s: it did not outlast the client timeout, nothing was shown"
    for job in blockers:
        requests.delete(farm.url(f"/jobs/{job['id']}"), timeout=10)
