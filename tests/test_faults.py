"""Nothing lost: each single fault, injected for real, ends every job in a true state within a bound, and every
listener receives all its audio with no gap and no duplicate.

Bound (defaults; the tests shorten the lease): a segment whose run is interrupted is running again within
SEGMENT_LEASE_SECONDS + REAPER_INTERVAL_SECONDS (12 s) once its dependencies answer again; a claimed segment
that never reached the broker is sent within SEND_GRACE_SECONDS + REAPER_INTERVAL_SECONDS (7 s); a job whose next
segment nobody dispatched is dispatched within REAPER_INTERVAL_SECONDS (2 s). The tests of the last two assert
those bounds from the farm's own settings, plus MARGIN_SECONDS.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from celery import Celery

from celery_config import celery_config
from shared import jobs, streams
from shared.db import session_scope
from shared.dispatch import SEND_GRACE_SECONDS, dispatch, send_segment
from shared.settings import Settings, configure
from shared.streams import current_epoch
from tests.audio import ResumingListener, read_wav, xtts_samples
from tests.farms import SHORT_AUDIO_TTL, SHORT_LEASES, SharedFarm
from tests.prometheus import scrape, value
from tools.localfarm import Farm, tts_body, wait_for

SPEAKER = "Claribel Dervla"
SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)
# Audio tokens of the one segment a mid-segment fault interrupts (chunks of 5): the fault strikes after its third
# chunk, and the segment's next write fails within a chunk, so what matters is only that most of it is still to come
# (about 6 s of synthesis alone here). 300 took twice as long and proved nothing more.
FAULTED_TOKENS = 150
# A listener of a job that reconnects with its cursor whenever its stream breaks off, error events included.
Listener = functools.partial(ResumingListener, retry_errors=True)
# Faults are about the database as much as the processes: every test here runs on both backends.
pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _body(tokens: int, sentences: int = 1, chunk: int = 8) -> dict[str, Any]:
    return tts_body(" ".join([SENTENCE] * sentences), tokens, chunk, SPEAKER)


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
    # Celery's own line for the duplicate's task: it returned (its dispatch included) rather than raising. Celery
    # writes it after the task has returned, so after the run was counted: a full run here read the log between
    # the two.
    trace = f": 'skipped' job={job['id']}"
    wait_for(lambda: _worker_log_lines(farm, trace), 30, "Celery's line for the duplicate's task")
    assert len(_worker_log_lines(farm, trace)) == 1
    listener.complete(200)
    status = farm.wait_for_state(job["id"], ("succeeded",))
    assert status["segments"][0]["attempts"] == 1  # the duplicate used no attempt and wrote nothing
    assert status["progress"]["audio_samples"] == xtts_samples(200)
    assert _segment_runs(farm, "skipped") == skipped + 1  # delivered once more, skipped once


def _segment_runs(farm: Farm, outcome: str) -> float:
    """The farm's count of segment runs that ended with `outcome`, every worker's (GET /metrics)."""
    return value(scrape(farm.base_url, farm.headers), "xtts_segments_total", outcome=outcome)


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


# What the reaper's bounds below allow beyond the farm's settings: the reaper's pass itself, the broker's delivery
# to the idle worker and the start of its run, on a loaded two-core CI machine.
MARGIN_SECONDS = 3.0


def _started_after(farm: Farm, job_id: str, index: int, fault: datetime) -> float:
    """Seconds from `fault` to the first start of the segment's run (its `started`, stamped by the worker)."""
    started = wait_for(lambda: farm.job(job_id)["segments"][index]["started"], 60, f"segment {index} to start")
    return (datetime.fromisoformat(started) - fault).total_seconds()


def _job_audio(farm: Farm, job_id: str) -> bytes:
    """The PCM of GET /jobs/{id}/audio (a WAV file), once the job has succeeded."""
    response = requests.get(farm.url(f"/jobs/{job_id}/audio"), timeout=30)
    assert response.status_code == 200, response.text
    rate, _frames, pcm = read_wav(response.content)
    assert rate == 24000
    return pcm


def test_a_broker_refusal_after_the_claim_is_sent_by_the_reaper(farm_with) -> None:
    farm = farm_with(**SHORT_LEASES)
    reaper_interval = float(farm.env["REAPER_INTERVAL_SECONDS"])
    with _as_the_farm(farm):
        job_id = _stored_job(farm, segments=1, tokens=30)
        listener = Listener(farm, job_id)

        class RefusingBroker:
            def send_task(self, *_: Any, **__: Any) -> None:
                raise ConnectionError("the broker refused the message")

        fault = datetime.now(UTC)
        with pytest.raises(ConnectionError):
            dispatch(RefusingBroker(), job_id, live_workers=1)  # type: ignore[arg-type]
        assert jobs.get_job(job_id).segments_dispatched == 1  # claimed in SQL, never sent
    took = _started_after(farm, job_id, 0, fault)
    print(f"claimed-but-unsent segment started {took:.1f} s after the refusal")
    # Sent by the reaper once SEND_GRACE_SECONDS overdue (not before: nothing else sends it), at its next pass.
    bound = SEND_GRACE_SECONDS + reaper_interval + MARGIN_SECONDS
    assert SEND_GRACE_SECONDS <= took <= bound, f"started {took:.1f} s after the refusal; bound {bound:g} s"
    listener.complete(30)
    status = farm.wait_for_state(job_id, ("succeeded",), 60)
    assert status["segments"][0]["attempts"] == 1
    assert b"".join(e.pcm for e in listener.audio) == _job_audio(farm, job_id)


def test_a_worker_that_died_between_success_and_dispatch_does_not_stall_its_job(farm_with) -> None:
    farm = farm_with(**SHORT_LEASES)
    reaper_interval = float(farm.env["REAPER_INTERVAL_SECONDS"])
    ghost_audio = bytes(range(256)) * (xtts_samples(20) * 2 // 256)  # one segment's worth, recognizable
    with _as_the_farm(farm):
        job_id = _stored_job(farm, segments=2, tokens=20)
        listener = Listener(farm, job_id)
        # What a dying worker leaves: segment 0 claimed, taken, its audio streamed, recorded done and its stream
        # ended (in the order a run does it: workers/synthesis.py), then nothing: segment 1 never dispatched.
        assert jobs.claim_next_segment(job_id, window=1, send_grace=3600) == 0
        assert isinstance(jobs.start_segment(job_id, 0, "ghost", "ghost-run", 60), jobs.SegmentWork)
        writer = streams.StreamWriter(_redis(farm), job_id, 0, "ghost-run", 600)
        writer.claim()
        half = len(ghost_audio) // 2
        for seq, pcm in enumerate((ghost_audio[:half], ghost_audio[half:]), start=1):
            writer.audio(seq, pcm)
            assert jobs.record_chunk(job_id, 0, "ghost-run", len(pcm) // 2)
        assert jobs.finish_segment(job_id, 0, "ghost-run") is False
        writer.end(3)
        fault = datetime.now(UTC)  # the worker dies here, before dispatching segment 1
    took = _started_after(farm, job_id, 1, fault)
    print(f"the stalled job's next segment started {took:.1f} s after its worker died")
    # Dispatched (claimed and sent at once) by the reaper's next pass: stalled jobs need no grace.
    bound = reaper_interval + MARGIN_SECONDS
    assert took <= bound, f"started {took:.1f} s after the worker died; bound {bound:g} s"
    listener.complete(20, segments=2)
    status = farm.wait_for_state(job_id, ("succeeded",), 60)
    assert [s["state"] for s in status["segments"]] == ["succeeded", "succeeded"]
    assert status["segments"][1]["attempts"] == 1
    audio = _job_audio(farm, job_id)
    assert audio[: len(ghost_audio)] == ghost_audio  # segment 0 as its worker delivered it, then segment 1
    assert b"".join(e.pcm for e in listener.audio) == audio


def _redis(farm: Farm):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(farm.redis_url)


@pytest.mark.backends("postgresql")  # a database server to cut off (the suite's, through the farm's proxy)
def test_the_database_cut_mid_segment_then_back(farm_with) -> None:
    """PostgreSQL unreachable for a few seconds (through a proxy the test cuts): the worker's writes fail, its
    lease lapses, the reaper resumes the segment once the database answers; the API answers 503 meanwhile."""
    farm: SharedFarm = farm_with(**SHORT_LEASES)
    assert farm.database_proxy is not None
    job = requests.post(farm.url("/jobs"), json=_body(FAULTED_TOKENS, chunk=5), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: farm.job(job["id"])["progress"]["chunks"] > 2, 60, "audio before the cut")
    with farm.database_proxy.down():
        down = requests.post(farm.url("/jobs"), json=_body(10), timeout=30)
        assert down.status_code == 503 and down.json()["error"]["code"] == "database_unavailable"
        time.sleep(5)  # the fault lasts a few seconds: what is being tested is that duration
    restored = time.monotonic()
    listener.complete(FAULTED_TOKENS, timeout=120)
    status = farm.wait_for_state(job["id"], ("succeeded",), 60)
    print(f"job finished {time.monotonic() - restored:.1f} s after the database came back")
    assert status["progress"]["audio_samples"] == xtts_samples(FAULTED_TOKENS)
    assert requests.post(farm.url("/jobs"), json=_body(10), timeout=30).status_code == 202


def test_redis_down_mid_segment_with_persistence(farm_with) -> None:
    """Redis (with its append-only file) stopped for a few seconds mid-segment: the worker's write fails, the
    segment is queued again in SQL, and runs on from the audio already in the stream once Redis is back."""
    farm: SharedFarm = farm_with(**SHORT_LEASES)
    redis_server = farm.redis_server
    assert redis_server.persistent
    job = requests.post(farm.url("/jobs"), json=_body(FAULTED_TOKENS, chunk=5), timeout=30).json()
    listener = Listener(farm, job["id"])
    wait_for(lambda: farm.job(job["id"])["progress"]["chunks"] > 2, 60, "audio before the outage")
    redis_server.stop()
    time.sleep(4)  # the outage
    redis_server.start()
    listener.complete(FAULTED_TOKENS, timeout=180)
    status = farm.wait_for_state(job["id"], ("succeeded",), 60)
    assert status["progress"]["audio_samples"] == xtts_samples(FAULTED_TOKENS)


def test_sigterm_to_a_worker_hands_its_segments_to_another_at_once(farm: SharedFarm) -> None:
    assert farm.env["SEGMENT_LEASE_SECONDS"] == "60"  # a lease far too long to wait for
    job = requests.post(farm.url("/jobs"), json=_body(FAULTED_TOKENS, chunk=5), timeout=30).json()
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
    listener.complete(FAULTED_TOKENS)
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
