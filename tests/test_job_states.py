"""The job state machine in SQL: every guarded transition, allowed and refused, on both database backends.

No worker and no Redis: these call `shared.jobs` directly against a real, migrated database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import jobs
from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Job, JobState
from shared.settings import Settings, configure
from tools.localfarm import migrate

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (s.value for s in JobState)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, database_factory) -> Iterator[str]:
    url = database_factory(request.param)
    migrate(url)
    configure(Settings(DATABASE_URL=url))
    yield url
    configure(None)


def _job(segments: int = 3, epoch: str = "e1") -> str:
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="job",
            text="t",
            language="en",
            speaker_kind="builtin",
            speaker_ref="x",
            params={},
            segments=[f"segment {i}." for i in range(segments)],
            epoch=epoch,
        )
    return job.id


def _state(job_id: str) -> tuple[str, list[str]]:
    job = jobs.get_job(job_id, with_segments=True)
    return job.state, [seg.state for seg in job.segments]


def _claim_all(job_id: str, window: int) -> list[int]:
    claimed = []
    while (index := jobs.claim_next_segment(job_id, window)) is not None:
        claimed.append(index)
    return claimed


def test_a_new_job_is_queued_with_nothing_dispatched(database: str) -> None:
    job_id = _job(3)
    job = jobs.get_job(job_id)
    assert (job.state, job.segments_total, job.segments_dispatched, job.segments_done) == (QUEUED, 3, 0, 0)
    assert _state(job_id) == (QUEUED, [QUEUED] * 3)


def test_claims_respect_the_window_and_never_repeat(database: str) -> None:
    job_id = _job(5)
    assert _claim_all(job_id, window=2) == [0, 1]
    assert jobs.claim_next_segment(job_id, 2) is None  # window full
    assert jobs.start_segment(job_id, 0, "w") is not None
    assert jobs.finish_segment(job_id, 0) is False
    assert _claim_all(job_id, window=2) == [2]  # one done: room for one more
    assert _claim_all(job_id, window=10) == [3, 4]
    assert jobs.claim_next_segment(job_id, 10) is None  # nothing left to dispatch


def test_start_moves_the_job_to_running_and_counts_attempts(database: str) -> None:
    job_id = _job(2)
    work = jobs.start_segment(job_id, 0, "worker-a")
    assert work is not None and work.attempts == 1 and work.text == "segment 0."
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == RUNNING and job.started_at is not None
    assert job.segments[0].state == RUNNING and job.segments[0].worker == "worker-a"
    again = jobs.start_segment(job_id, 0, "worker-b")  # a redelivery counts as another attempt
    assert again is not None and again.attempts == 2


def test_start_is_refused_for_unknown_done_or_ended_work(database: str) -> None:
    assert jobs.start_segment("no-such-job", 0, "w") is None
    job_id = _job(2)
    assert jobs.start_segment(job_id, 7, "w") is None  # no such segment
    jobs.start_segment(job_id, 0, "w")
    jobs.finish_segment(job_id, 0)
    assert jobs.start_segment(job_id, 0, "w") is None  # already succeeded
    jobs.cancel_job(job_id)
    assert jobs.start_segment(job_id, 1, "w") is None  # the job ended


def test_audio_chunks_are_counted_on_job_and_segment(database: str) -> None:
    job_id = _job(1)
    jobs.start_segment(job_id, 0, "w")
    jobs.record_chunk(job_id, 0, 1000)
    jobs.record_chunk(job_id, 0, 500)
    job = jobs.get_job(job_id, with_segments=True)
    assert (job.chunks_done, job.audio_samples) == (2, 1500) and job.first_chunk_at is not None
    assert (job.segments[0].chunks, job.segments[0].samples) == (2, 1500)


def test_the_last_segment_done_makes_the_job_succeed_once(database: str) -> None:
    job_id = _job(2)
    for index in (0, 1):
        jobs.start_segment(job_id, index, "w")
    assert jobs.finish_segment(job_id, 1) is False  # out of order is fine: not the last to finish
    assert jobs.finish_segment(job_id, 1) is False  # a duplicate finish counts nothing
    assert jobs.get_job(job_id).segments_done == 1
    assert jobs.finish_segment(job_id, 0) is True
    job = jobs.get_job(job_id)
    assert job.state == SUCCEEDED and job.segments_done == 2 and job.finished_at is not None


def test_a_failed_segment_fails_the_job_and_stops_the_others(database: str) -> None:
    job_id = _job(3)
    jobs.start_segment(job_id, 0, "w")
    jobs.finish_segment(job_id, 0)
    jobs.start_segment(job_id, 1, "w")
    jobs.fail_segment(job_id, 1, "boom")
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == FAILED and job.error == "segment 1: boom"
    assert [seg.state for seg in job.segments] == [SUCCEEDED, FAILED, CANCELLED]


def test_an_ended_job_cannot_fail_succeed_or_be_cancelled_again(database: str) -> None:
    job_id = _job(1)
    assert jobs.cancel_job(job_id) is True
    assert jobs.cancel_job(job_id) is False
    jobs.fail_segment(job_id, 0, "late failure")
    assert jobs.finish_segment(job_id, 0) is False
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == CANCELLED and job.error is None and job.segments_done == 0
    assert job.segments[0].state == CANCELLED and job.segments[0].error is None


def test_retrying_puts_a_running_segment_back_in_the_queue(database: str) -> None:
    job_id = _job(2)
    jobs.start_segment(job_id, 0, "w")
    jobs.mark_segment_retrying(job_id, 0, "transient")
    job = jobs.get_job(job_id, with_segments=True)
    assert job.state == RUNNING and job.segments[0].state == QUEUED and job.segments[0].error == "transient"
    jobs.start_segment(job_id, 1, "w")
    jobs.finish_segment(job_id, 1)
    jobs.mark_segment_retrying(job_id, 1, "too late")  # refused: it succeeded
    assert jobs.get_job(job_id, with_segments=True).segments[1].state == SUCCEEDED


def test_cancel_stops_queued_and_running_segments(database: str) -> None:
    job_id = _job(3)
    jobs.start_segment(job_id, 0, "w")
    jobs.finish_segment(job_id, 0)
    jobs.start_segment(job_id, 1, "w")
    assert jobs.cancel_job(job_id) is True
    assert _state(job_id) == (CANCELLED, [SUCCEEDED, CANCELLED, CANCELLED])


def test_jobs_of_an_older_redis_epoch_are_declared_lost(database: str) -> None:
    old, current, done = _job(1, epoch="old"), _job(1, epoch="new"), _job(1, epoch="old")
    jobs.start_segment(done, 0, "w")
    jobs.finish_segment(done, 0)
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
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="tts",
            text="t",
            language="en",
            speaker_kind="inline",
            speaker_ref="h",
            params={},
            segments=["a."],
            epoch="e",
            inline_voice=b"npz-bytes",
        )
    assert jobs.inline_voice(job.id) == b"npz-bytes"
    with session_scope() as s:
        assert s.get(Job, job.id) is not None
