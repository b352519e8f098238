"""The job state machine in SQL: every guarded transition, allowed and refused, on both database backends.

No worker and no Redis: these call `shared.jobs` directly against a real, migrated database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from shared import jobs
from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Job, JobSegment, JobState, utcnow
from shared.priority import Priority
from shared.settings import Settings, configure
from shared.tasks import BULK_QUEUE, SYNTHESIS_QUEUE
from tools.localfarm import migrate

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (s.value for s in JobState)


pytestmark = pytest.mark.backends("sqlite", "postgresql")


@pytest.fixture(scope="module")
def database(backend: str, database_factory) -> Iterator[str]:
    url = database_factory(backend)
    migrate(url)
    configure(Settings(DATABASE_URL=url))
    yield url
    configure(None)


def _job(segments: int = 3, epoch: str = "e1", inline_voice: bytes | None = None) -> str:
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="job",
            text="t",
            language="en",
            voice_kind="inline" if inline_voice else "builtin",
            voice_ref="h" if inline_voice else "x",
            params={},
            segments=[f"segment {i}." for i in range(segments)],
            epoch=epoch,
            inline_voice=inline_voice,
        )
    return job.id


def _state(job_id: str) -> tuple[str, list[str]]:
    job = jobs.get_job(job_id, with_segments=True)
    return job.state, [seg.state for seg in job.segments]


def _claim_all(job_id: str, window: int) -> list[int]:
    claimed = []
    while (index := jobs.claim_next_segment(job_id, window, send_grace=5)) is not None:
        claimed.append(index)
    return claimed


def _start(job_id: str, index: int, run: str = "run-a", lease: float = 30) -> jobs.SegmentWork:
    work = jobs.start_segment(job_id, index, "worker-a", run, lease)
    assert isinstance(work, jobs.SegmentWork), work
    return work


def _expire(job_id: str, index: int) -> None:
    """What time does to the lease of a worker that died."""
    with session_scope() as s:
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_a_new_job_is_queued_with_nothing_dispatched(database: str) -> None:
    job_id = _job(3)
    job = jobs.get_job(job_id)
    assert (job.state, job.segments_total, job.segments_dispatched, job.segments_done) == (QUEUED, 3, 0, 0)
    assert _state(job_id) == (QUEUED, [QUEUED] * 3)


def test_claims_respect_the_window_and_never_repeat(database: str) -> None:
    job_id = _job(5)
    assert _claim_all(job_id, window=2) == [0, 1]
    assert jobs.claim_next_segment(job_id, 2, send_grace=5) is None  # window full
    _start(job_id, 0)
    assert jobs.finish_segment(job_id, 0, "run-a") is False
    assert _claim_all(job_id, window=2) == [2]  # one done: room for one more
    assert _claim_all(job_id, window=10) == [3, 4]
    assert jobs.claim_next_segment(job_id, 10, send_grace=5) is None  # nothing left to dispatch


def test_start_takes_the_lease_and_moves_the_job_to_running(database: str) -> None:
    job_id = _job(2)
    work = _start(job_id, 0)
    assert work.attempts == 1 and work.text == "segment 0." and work.run == "run-a"
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == RUNNING and job.started_at is not None
    segment = job.segments[0]
    assert segment.state == RUNNING and segment.worker == "worker-a" and segment.lease_owner == "run-a"


def test_a_duplicate_delivery_leaves_a_live_lease_alone_and_uses_no_attempt(database: str) -> None:
    job_id = _job(1)
    _start(job_id, 0, "run-a")
    assert jobs.start_segment(job_id, 0, "worker-b", "run-b", 30) is jobs.Refused.HELD
    segment = jobs.get_job(job_id, with_segments=True).segments[0]
    assert segment.lease_owner == "run-a" and segment.attempts == 1


def test_an_expired_lease_is_taken_over_and_the_old_run_is_fenced_off(database: str) -> None:
    job_id = _job(1)
    _start(job_id, 0, "fence-a")
    _expire(job_id, 0)
    assert _start(job_id, 0, "fence-b").attempts == 2
    assert jobs.renew_leases(["fence-a", "fence-b"], 30) == {"fence-b"}
    assert jobs.record_chunk(job_id, 0, "fence-a", 100) is False  # the old run writes nothing any more
    assert jobs.finish_segment(job_id, 0, "fence-a") is False
    assert jobs.record_chunk(job_id, 0, "fence-b", 100) is True
    assert jobs.finish_segment(job_id, 0, "fence-b") is True
    job = jobs.get_job(job_id)
    assert job.state == SUCCEEDED and job.chunks_done == 1 and job.audio_samples == 100


def test_start_is_refused_for_unknown_done_or_ended_work(database: str) -> None:
    assert jobs.start_segment("no-such-job", 0, "w", "r", 30) is jobs.Refused.GONE
    job_id = _job(2)
    assert jobs.start_segment(job_id, 7, "w", "r", 30) is jobs.Refused.GONE  # no such segment
    _start(job_id, 0)
    jobs.finish_segment(job_id, 0, "run-a")
    assert jobs.start_segment(job_id, 0, "w", "r", 30) is jobs.Refused.DONE
    jobs.cancel_job(job_id)
    assert jobs.start_segment(job_id, 1, "w", "r", 30) is jobs.Refused.ENDED


def test_audio_chunks_are_counted_on_job_and_segment(database: str) -> None:
    job_id = _job(1)
    _start(job_id, 0)
    jobs.record_chunk(job_id, 0, "run-a", 1000)
    jobs.record_chunk(job_id, 0, "run-a", 500)
    job = jobs.get_job(job_id, with_segments=True)
    assert (job.chunks_done, job.audio_samples) == (2, 1500) and job.first_chunk_at is not None
    assert (job.segments[0].chunks, job.segments[0].samples) == (2, 1500)


def test_the_last_segment_done_makes_the_job_succeed_once(database: str) -> None:
    job_id = _job(2)
    _start(job_id, 0, "run-0")
    _start(job_id, 1, "run-1")
    assert jobs.finish_segment(job_id, 1, "run-1") is False  # out of order is fine: not the last to finish
    assert jobs.finish_segment(job_id, 1, "run-1") is False  # a duplicate finish counts nothing
    assert jobs.get_job(job_id).segments_done == 1
    assert jobs.finish_segment(job_id, 0, "run-0") is True
    job = jobs.get_job(job_id)
    assert job.state == SUCCEEDED and job.segments_done == 2 and job.finished_at is not None


def test_a_failed_segment_fails_the_job_and_stops_the_others(database: str) -> None:
    job_id = _job(3)
    _start(job_id, 0, "run-0")
    jobs.finish_segment(job_id, 0, "run-0")
    _start(job_id, 1, "run-1")
    jobs.fail_segment(job_id, 1, "boom", run="run-1")
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == FAILED and job.error == "segment 1: boom"
    assert [seg.state for seg in job.segments] == [SUCCEEDED, FAILED, CANCELLED]


def test_an_ended_job_cannot_fail_succeed_or_be_cancelled_again(database: str) -> None:
    job_id = _job(1)
    _start(job_id, 0)
    assert jobs.cancel_job(job_id) is True
    assert jobs.cancel_job(job_id) is False
    jobs.fail_segment(job_id, 0, "late failure")
    assert jobs.finish_segment(job_id, 0, "run-a") is False
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == CANCELLED and job.error is None and job.segments_done == 0
    assert job.segments[0].state == CANCELLED and job.segments[0].error is None


def test_a_retry_queues_the_segment_again_after_its_backoff(database: str) -> None:
    job_id = _job(2)
    _start(job_id, 0)
    assert jobs.requeue_segment(job_id, 0, "run-a", "transient", delay=3600) is True
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == RUNNING and job.segments[0].state == QUEUED and job.segments[0].error == "transient"
    assert (job_id, 0) not in jobs.reap(max_attempts=3).due  # not before its backoff is over
    assert jobs.requeue_segment(job_id, 0, "run-a", "again", delay=0) is False  # no longer its run's
    _start(job_id, 1, "run-1")
    jobs.finish_segment(job_id, 1, "run-1")
    assert jobs.requeue_segment(job_id, 1, "run-1", "too late", delay=0) is False  # it succeeded


def test_a_worker_shutting_down_gives_its_segment_back_without_using_an_attempt(database: str) -> None:
    job_id = _job(1)
    _start(job_id, 0)
    assert jobs.give_back(job_id, 0, "run-a") is True
    segment = jobs.get_job(job_id, with_segments=True).segments[0]
    assert segment.state == QUEUED and segment.attempts == 0 and segment.lease_owner is None
    assert (job_id, 0) in jobs.reap(max_attempts=3).due  # sent again at once


def test_the_reaper_requeues_expired_leases_then_fails_crash_loops(database: str) -> None:
    job_id = _job(1)
    _start(job_id, 0, "run-a")
    _expire(job_id, 0)
    reaped = jobs.reap(max_attempts=2)
    assert (job_id, 0) in reaped.requeued and (job_id, 0) in reaped.due
    _start(job_id, 0, "run-b")
    _expire(job_id, 0)
    reaped = jobs.reap(max_attempts=2)
    assert (job_id, 0) in reaped.failed
    job = jobs.get_job(job_id)
    assert job.state == FAILED and "lost 2 times" in (job.error or "")


def _sent_at(job_id: str, index: int, seconds_ago: float) -> None:
    with session_scope() as s:
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index)
            .values(sent_at=utcnow() - timedelta(seconds=seconds_ago))
        )


def test_a_live_segment_overtaken_by_one_sent_after_it_is_sent_again(database: str) -> None:
    """A live segment sent, never started, while a live segment sent after it, more than 5 s ago, was taken by a
    worker (the live queue is first in, first out: the first one's task went to a worker that died before starting
    it): the reaper sends it again. Not while the later one waits too or was sent moments ago, nor for bulk work, nor
    once sent again."""
    job_id = _job(3)
    assert _claim_all(job_id, window=2) == [0, 1]
    jobs.mark_sent(job_id, 0)
    _sent_at(job_id, 0, seconds_ago=20)
    jobs.mark_sent(job_id, 1)
    _sent_at(job_id, 1, seconds_ago=2)
    assert jobs.reap(max_attempts=3).overtaken == []  # the later one is still waiting too
    _start(job_id, 1, "run-b")
    assert jobs.reap(max_attempts=3).overtaken == []  # taken, but moments ago: the first may be starting
    _sent_at(job_id, 1, seconds_ago=10)
    assert jobs.reap(max_attempts=3).overtaken == [(job_id, 0)]
    jobs.mark_sent(job_id, 0)  # what the reaper's send records: from now on, nobody overtook it
    assert jobs.reap(max_attempts=3).overtaken == []
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(priority=Priority.BULK.value))
    _sent_at(job_id, 0, seconds_ago=20)
    assert jobs.reap(max_attempts=3).overtaken == []  # bulk work waits behind live work: no sign of a loss


def test_claimed_segments_never_sent_are_found_once_due(database: str) -> None:
    job_id = _job(2)
    assert jobs.claim_next_segment(job_id, 1, send_grace=0) == 0
    assert (job_id, 0) in jobs.reap(max_attempts=3).due  # claimed, never sent, due
    jobs.mark_sent(job_id, 0)
    assert (job_id, 0) not in jobs.reap(max_attempts=3).due


def test_jobs_whose_next_segment_nobody_dispatched_are_found(database: str) -> None:
    job_id = _job(2)
    assert job_id in jobs.stalled_jobs()  # created, nothing claimed
    _claim_all(job_id, window=1)
    assert job_id not in jobs.stalled_jobs()  # one in flight
    _start(job_id, 0)
    jobs.finish_segment(job_id, 0, "run-a")
    assert job_id in jobs.stalled_jobs()  # its runner finished without dispatching the next one


def test_cancel_stops_queued_and_running_segments(database: str) -> None:
    job_id = _job(3)
    _start(job_id, 0, "run-0")
    jobs.finish_segment(job_id, 0, "run-0")
    _start(job_id, 1, "run-1")
    assert jobs.cancel_job(job_id) is True
    assert _state(job_id) == (CANCELLED, [SUCCEEDED, CANCELLED, CANCELLED])


def test_jobs_of_an_older_redis_epoch_are_declared_lost(database: str) -> None:
    old, current, done = _job(1, epoch="old"), _job(1, epoch="new"), _job(1, epoch="old")
    _start(done, 0)
    jobs.finish_segment(done, 0, "run-a")
    assert jobs.fail_if_lost(current, "new") is False
    assert jobs.fail_if_lost(old, "new") is True
    assert jobs.fail_if_lost(old, "new") is False  # already declared
    lost = jobs.get_job(old, with_segments=True)
    assert lost.state == FAILED and "Redis restarted" in (lost.error or "") and lost.segments[0].state == CANCELLED
    assert jobs.get_job(done).state == SUCCEEDED  # finished jobs are not touched
    another = _job(1, epoch="old")
    assert jobs.fail_lost_jobs("new") >= 1
    assert jobs.get_job(another).state == FAILED and jobs.get_job(current).state == QUEUED


def test_unknown_jobs_are_not_found(database: str) -> None:
    with pytest.raises(NotFound):
        jobs.get_job("nope")
    with pytest.raises(NotFound):
        jobs.inline_voice(_job(1))  # a job without inline latents


def test_inline_voices_are_kept_with_the_job(database: str) -> None:
    job_id = _job(segments=1, inline_voice=b"npz-bytes")
    assert jobs.inline_voice(job_id) == b"npz-bytes"


def test_a_reader_makes_a_bulk_job_live_unless_its_request_said_bulk(database: str) -> None:
    """POST /jobs is bulk by default; a reader attaching to its stream (jobs.make_live) makes it live, and its next
    segments go to the live queue. A job whose request said `bulk`, or one that ended, stays as it is."""
    default, stated, ended = _job(), _job(), _job()
    with session_scope() as s:
        for job_id, is_stated in ((default, False), (stated, True), (ended, False)):
            s.execute(
                update(Job).where(Job.id == job_id).values(priority=Priority.BULK.value, priority_stated=is_stated)
            )
    jobs.cancel_job(ended)
    assert jobs.priority_of(default) is Priority.BULK and Priority.BULK.queue == BULK_QUEUE
    assert jobs.make_live(default) and jobs.priority_of(default) is Priority.LIVE
    assert Priority.LIVE.queue == SYNTHESIS_QUEUE
    assert not jobs.make_live(default)  # once is enough
    assert not jobs.make_live(stated) and jobs.priority_of(stated) is Priority.BULK
    assert not jobs.make_live(ended) and jobs.priority_of(ended) is Priority.BULK


# --- a text written as it is spoken (a voice agent's context) ----------------------------------------------------
def _open_job() -> str:
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="agent",
            text="",
            language="en",
            voice_kind="builtin",
            voice_ref="x",
            params={},
            segments=[],
            epoch="e1",
            text_open=True,
        )
    return job.id


def test_an_open_text_takes_segments_until_closed_and_succeeds_only_then(database: str) -> None:
    job_id = _open_job()
    assert jobs.append_segments(job_id, "One. ", ["One."]) == 0
    assert jobs.append_segments(job_id, "Two. Three.", ["Two.", "Three."]) == 1
    assert _claim_all(job_id, 5) == [0, 1, 2]
    for index in range(3):
        _start(job_id, index, f"run-{index}")
        assert jobs.finish_segment(job_id, index, f"run-{index}") is False  # its text may go on
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == RUNNING and job.text == "One. Two. Three." and job.segments_total == 3
    assert [seg.text for seg in job.segments] == ["One.", "Two.", "Three."]
    assert jobs.close_text(job_id) is True  # everything said: it ends with its close
    assert jobs.get_job(job_id).state == SUCCEEDED
    with pytest.raises(jobs.TextClosed):
        jobs.append_segments(job_id, "Four.", ["Four."])


def test_a_closed_text_ends_with_its_last_segment_and_an_empty_one_at_once(database: str) -> None:
    job_id = _open_job()
    jobs.append_segments(job_id, "One.", ["One."])
    _claim_all(job_id, 5)
    _start(job_id, 0)
    assert jobs.close_text(job_id) is False  # a segment is still running
    assert jobs.finish_segment(job_id, 0, "run-a") is True
    assert jobs.get_job(job_id).state == SUCCEEDED
    empty = _open_job()
    assert jobs.close_text(empty) is True and jobs.get_job(empty).state == SUCCEEDED


def test_a_cancelled_or_abandoned_text_takes_nothing_more(database: str) -> None:
    cancelled = _open_job()
    jobs.cancel_job(cancelled)
    with pytest.raises(jobs.TextClosed):
        jobs.append_segments(cancelled, "One.", ["One."])
    abandoned, closed = _open_job(), _open_job()
    jobs.close_text(closed)
    assert abandoned in jobs.open_texts(older_than=0) and closed not in jobs.open_texts(older_than=0)
    assert abandoned not in jobs.open_texts(older_than=3600)
    assert jobs.abandon_text(abandoned) is True and jobs.abandon_text(closed) is False
    job = jobs.get_job(abandoned)
    assert job.state == CANCELLED and job.error == jobs.WRITER_LOST and not job.text_open


def test_the_last_segment_and_the_close_racing_end_the_text_exactly_once(database: str) -> None:
    """Whichever of the two commits second sees both the segment done and the text closed (the job's row lock)."""
    for _ in range(20):
        job_id = _open_job()
        jobs.append_segments(job_id, "One.", ["One."])
        _claim_all(job_id, 5)
        _start(job_id, 0)
        barrier = threading.Barrier(2)
        ended: list[bool] = []

        def finish(job_id: str = job_id, barrier: threading.Barrier = barrier, ended: list[bool] = ended) -> None:
            barrier.wait()
            ended.append(jobs.finish_segment(job_id, 0, "run-a"))

        def close(job_id: str = job_id, barrier: threading.Barrier = barrier, ended: list[bool] = ended) -> None:
            barrier.wait()
            ended.append(jobs.close_text(job_id))

        threads = [threading.Thread(target=finish), threading.Thread(target=close)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert jobs.get_job(job_id).state == SUCCEEDED
        assert sorted(ended) == [False, True]  # one of them ended it
