"""Nothing lost: each single fault, injected for real, ends every job in a true state within a bound, and every
listener receives all its audio with no gap and no duplicate.

Bound (defaults; the tests shorten the lease): a segment whose run is interrupted is running again within
SEGMENT_LEASE_SECONDS + REAPER_INTERVAL_SECONDS (12 s) once its dependencies answer again; a claimed segment
that never reached the broker is sent within SEND_GRACE_SECONDS + REAPER_INTERVAL_SECONDS (7 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from celery_config import celery_config
from shared import jobs
from shared.db import session_scope
from shared.dispatch import dispatch, send_segment
from shared.settings import Settings, configure
from shared.streams import current_epoch
from tests.audio import Event, sse_events, xtts_samples
from tests.farms import SHORT_AUDIO_TTL, SHORT_LEASES, SharedFarm
from tools.localfarm import Farm, tts_body, wait_for

SPEAKER = "Claribel Dervla"
SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)
# Faults are about the database as much as the processes: every test here runs on both backends.
pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _body(tokens: int, sentences: int = 1, chunk: int = 8) -> dict[str, Any]:
    return tts_body(" ".join([SENTENCE] * sentences), tokens, chunk, SPEAKER)


class Listener:
    """A client of GET /jobs/{id}/stream that reconnects with its cursor whenever the stream breaks off, and can
    read at the pace of playback."""

    def __init__(self, farm: Farm, job_id: str, realtime: bool = False) -> None:
        self.farm, self.job_id, self.realtime = farm, job_id, realtime
        self.audio: list[Event] = []
        self.last: Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            cursor = self.audio[-1].id if self.audio else None
            try:
                with requests.get(
                    self.farm.url(f"/jobs/{self.job_id}/stream"),
                    params={"cursor": cursor} if cursor else {},
                    stream=True,
                    timeout=60,
                ) as response:
                    if response.status_code != 200:
                        time.sleep(0.5)
                        continue
                    for event in sse_events(response):
                        self.last = event
                        if event.event == "audio":
                            self.audio.append(event)
                            if self.realtime:
                                time.sleep(event.data["samples"] / 24000)
                        elif event.event == "end":
                            return
            except requests.RequestException:
                pass
            time.sleep(0.2)  # broken off (API restarting, Redis down): reconnect with the cursor

    def complete(self, tokens: int, segments: int = 1, timeout: float = 240) -> None:
        self.thread.join(timeout)
        assert self.last is not None and self.last.event == "end", self.last
        ids = [tuple(map(int, e.id.split("-"))) for e in self.audio]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "a chunk out of order or delivered twice"
        for segment in range(segments):
            seqs = [seq for seg, seq in ids if seg == segment]
            assert seqs == list(range(1, len(seqs) + 1)), f"a gap in segment {segment}"
        assert sum(len(e.pcm) for e in self.audio) // 2 == segments * xtts_samples(tokens), "audio missing"


def test_a_duplicate_delivery_while_the_first_run_lives_leaves_quietly(farm: SharedFarm) -> None:
    job = requests.post(farm.url("/jobs"), json=_body(200), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: farm.job(job["id"])["progress"]["chunks"] > 0, 60, "first audio")
    skipped = _segment_runs(farm, "skipped")
    # The broker delivers the same task again (a connection loss, a visibility timeout) while the first runs: the
    # very message the farm sends, to the queue the workers consume, through the farm's own dispatch code.
    with _as_the_farm(farm) as celery:
        send_segment(celery, job["id"], 0)
    # The worker took the duplicate, start_segment refused it (the first run's lease is live), and the task ended
    # SKIPPED after the dispatch it makes then (nothing left to dispatch: the job has one segment).
    wait_for(lambda: _segment_runs(farm, "skipped") > skipped, 60, "the duplicate to be skipped")
    assert _worker_log_lines(farm, f"segment {job['id']}/0 skipped: held"), "the duplicate was not refused as held"
    # Celery's own line for the duplicate's task: it returned (its dispatch included) rather than raising.
    assert len(_worker_log_lines(farm, f": 'skipped' job={job['id']}")) == 1
    listener.complete(200)
    status = farm.wait_for_state(job["id"], ("succeeded",))
    assert status["segments"][0]["attempts"] == 1  # the duplicate used no attempt and wrote nothing
    assert status["progress"]["audio_samples"] == xtts_samples(200)
    assert _segment_runs(farm, "skipped") == skipped + 1  # delivered once more, skipped once


def _segment_runs(farm: Farm, outcome: str) -> float:
    """The farm's count of segment runs that ended with `outcome`, every worker's (GET /metrics)."""
    text = requests.get(farm.url("/metrics"), headers=farm.headers, timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "xtts_segments_total" and sample.labels.get("outcome") == outcome
    )


def _worker_log_lines(farm: Farm, text: str) -> list[str]:
    """The lines of the farm's worker logs that contain `text`."""
    return [
        line
        for name in farm.workers
        for line in (farm.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        if text in line
    ]


def test_the_same_idempotency_key_makes_one_job(farm: Farm) -> None:
    key = f"order-{time.time_ns()}"
    body = _body(20)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(farm.url("/jobs"), json=body, headers={"Idempotency-Key": key}, timeout=30),
                range(4),
            )
        )
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1  # one job, however many times (and at once) it was sent
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 3
    job_id = answers[0].json()["id"]
    status = farm.wait_for_state(job_id, ("succeeded",))
    assert status["segments"][0]["attempts"] == 1  # enqueued once
    other = requests.post(farm.url("/jobs"), json=_body(21), headers={"Idempotency-Key": key}, timeout=30)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    bad = requests.post(farm.url("/jobs"), json=body, headers={"Idempotency-Key": "has space"}, timeout=30)
    assert bad.status_code == 400


@contextlib.contextmanager
def _as_the_farm(farm: Farm) -> Iterator[Celery]:
    """This test process acting on the farm's database and Redis, as one of its own processes would; yields a
    Celery client configured as the API's (the farm's queues and routes, from celery_config)."""
    settings = Settings(DATABASE_URL=farm.database_url, REDIS_URL=farm.redis_url)
    configure(settings)
    celery = Celery("faults")
    celery.conf.update(celery_config(settings))
    try:
        yield celery
    finally:
        celery.close()
        configure(None)


def _stored_job(farm: Farm, segments: int, tokens: int) -> str:
    """A job stored as the API stores one, before anything of it is dispatched."""
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="job",
            text=SENTENCE,
            language="en",
            voice_kind="builtin",
            voice_ref=SPEAKER,
            params={"min_new_tokens": tokens, "max_new_tokens": tokens},
            segments=[SENTENCE] * segments,
            epoch=current_epoch(_redis(farm)),
        )
    return job.id


def test_a_broker_refusal_after_the_claim_is_sent_by_the_reaper(farm_with) -> None:
    farm = farm_with(**SHORT_LEASES)
    with _as_the_farm(farm):
        job_id = _stored_job(farm, segments=1, tokens=30)

        class RefusingBroker:
            def send_task(self, *_: Any, **__: Any) -> None:
                raise ConnectionError("the broker refused the message")

        with pytest.raises(ConnectionError):
            dispatch(RefusingBroker(), job_id, live_workers=1)  # type: ignore[arg-type]
        assert jobs.get_job(job_id).segments_dispatched == 1  # claimed in SQL, never sent
    started = time.monotonic()
    farm.wait_for_state(job_id, ("succeeded",), 60)
    print(f"claimed-but-unsent segment synthesized {time.monotonic() - started:.1f} s later")


def test_a_worker_that_died_between_success_and_dispatch_does_not_stall_its_job(farm_with) -> None:
    farm = farm_with(**SHORT_LEASES)
    with _as_the_farm(farm):
        job_id = _stored_job(farm, segments=2, tokens=20)
        # What a dying worker leaves: segment 0 claimed, taken and recorded done, segment 1 never dispatched.
        assert jobs.claim_next_segment(job_id, window=1, send_grace=3600) == 0
        assert isinstance(jobs.start_segment(job_id, 0, "ghost", "ghost-run", 60), jobs.SegmentWork)
        assert jobs.finish_segment(job_id, 0, "ghost-run") is False
    status = farm.wait_for_state(job_id, ("succeeded",), 60)
    assert status["segments"][1]["state"] == "succeeded"


def _redis(farm: Farm):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(farm.redis_url)


@pytest.mark.backends("postgresql")  # a database server to cut off (the suite's, through the farm's proxy)
def test_the_database_cut_mid_segment_then_back(farm_with) -> None:
    """PostgreSQL unreachable for a few seconds (through a proxy the test cuts): the worker's writes fail, its
    lease lapses, the reaper resumes the segment once the database answers; the API answers 503 meanwhile."""
    farm: SharedFarm = farm_with(**SHORT_LEASES)
    assert farm.database_proxy is not None
    job = requests.post(farm.url("/jobs"), json=_body(300, chunk=5), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: farm.job(job["id"])["progress"]["chunks"] > 2, 60, "audio before the cut")
    with farm.database_proxy.down():
        down = requests.post(farm.url("/jobs"), json=_body(10), timeout=30)
        assert down.status_code == 503 and down.json()["error"]["code"] == "database_unavailable"
        time.sleep(5)  # the fault lasts a few seconds: what is being tested is that duration
    restored = time.monotonic()
    listener.complete(300, timeout=120)
    status = farm.wait_for_state(job["id"], ("succeeded",), 60)
    print(f"job finished {time.monotonic() - restored:.1f} s after the database came back")
    assert status["progress"]["audio_samples"] == xtts_samples(300)
    assert requests.post(farm.url("/jobs"), json=_body(10), timeout=30).status_code == 202


def test_redis_down_mid_segment_with_persistence(farm_with) -> None:
    """Redis (with its append-only file) stopped for a few seconds mid-segment: the worker's write fails, the
    segment is queued again in SQL, and runs on from the audio already in the stream once Redis is back."""
    farm: SharedFarm = farm_with(**SHORT_LEASES)
    redis_server = farm.redis_server
    assert redis_server.persistent
    job = requests.post(farm.url("/jobs"), json=_body(300, chunk=5), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: farm.job(job["id"])["progress"]["chunks"] > 2, 60, "audio before the outage")
    redis_server.stop()
    time.sleep(4)  # the outage
    redis_server.start()
    listener.complete(300, timeout=180)
    status = farm.wait_for_state(job["id"], ("succeeded",), 60)
    assert status["progress"]["audio_samples"] == xtts_samples(300)


def test_sigterm_to_a_worker_hands_its_segments_to_another_at_once(farm: SharedFarm) -> None:
    assert farm.env["SEGMENT_LEASE_SECONDS"] == "60"  # a lease far too long to wait for
    job = requests.post(farm.url("/jobs"), json=_body(300, chunk=5), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: farm.job(job["id"])["progress"]["chunks"] > 2, 60, "audio before the SIGTERM")
    (holder,) = farm.workers_on(job["id"])
    first = next(proc for proc in farm.workers.values() if proc.pid == holder["pid"])
    (other,) = [name for name, proc in farm.workers.items() if proc is not first]
    os.kill(first.pid, signal.SIGTERM)
    stopped = time.monotonic()
    wait_for(
        lambda: (
            farm.job(job["id"])["segments"][0]["worker"] not in (None,)
            and f"{other}@" in farm.job(job["id"])["segments"][0]["worker"]
        ),
        30,
        "the other worker to continue",
    )
    print(f"the other worker continued {time.monotonic() - stopped:.1f} s after the SIGTERM (lease 60 s)")
    assert time.monotonic() - stopped < 15
    listener.complete(300)
    status = farm.job(job["id"])
    assert status["state"] == "succeeded" and status["segments"][0]["attempts"] == 1  # handing back used none
    assert first.wait(30) == 0  # the worker exited cleanly


def test_sigterm_to_the_api_mid_stream_loses_no_audio(farm: Farm) -> None:
    job = requests.post(farm.url("/jobs"), json=_body(120, sentences=2), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: listener.audio, 60, "audio before the SIGTERM")
    assert farm.api is not None
    os.kill(farm.api.pid, signal.SIGTERM)  # the gunicorn master, as a service manager would
    assert farm.api.wait(60) == 0  # open streams ended within the grace period, cleanly
    farm.start_api()  # the listener reconnects with its cursor
    listener.complete(120, segments=2)


def test_a_realtime_listener_gets_everything_though_synthesis_outlives_the_stream_ttl(farm_with) -> None:
    farm = farm_with(**SHORT_AUDIO_TTL)  # STREAM_TTL_SECONDS=4, one segment at a time
    job = requests.post(farm.url("/jobs"), json=_body(60, sentences=3), timeout=30).json()
    listener = Listener(farm, job["id"], realtime=True)  # about 8 s of audio, read at the pace of playback
    listener.complete(60, segments=3, timeout=120)


def test_expired_audio_says_so_instead_of_ending_short(farm_with) -> None:
    farm = farm_with(**SHORT_AUDIO_TTL)  # STREAM_TTL_SECONDS=4
    job = requests.post(farm.url("/jobs"), json=_body(20, sentences=2), timeout=30).json()
    farm.wait_for_state(job["id"], ("succeeded",))
    wait_for(
        lambda: requests.get(farm.url(f"/jobs/{job['id']}/audio"), timeout=10).status_code == 410,
        30,
        "the audio to expire",
    )
    for response in (
        requests.get(farm.url(f"/jobs/{job['id']}/audio"), timeout=10),
        requests.get(farm.url(f"/jobs/{job['id']}/stream"), timeout=10),
        requests.get(farm.url(f"/jobs/{job['id']}/stream"), params={"cursor": "1-0"}, timeout=10),
    ):
        assert response.status_code == 410 and response.json()["error"]["code"] == "audio_expired"
