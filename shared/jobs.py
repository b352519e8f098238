"""The job state machine in SQL, the source of truth: creation, claims, progress, end states.

Every transition is a single guarded UPDATE (`... WHERE state IN (active states)`), so concurrent
workers, cancels and retries cannot move a job out of an end state or count a segment twice.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from shared.audio import SAMPLE_RATE
from shared.db import rows_changed, session_scope
from shared.errors import NotFound
from shared.models import ACTIVE_STATES, Job, JobSegment, JobState, utcnow
from shared.tenants import DEFAULT_TENANT

REDIS_LOST = (
    "lost: Redis restarted without its data, taking this job's queue entries and audio with it; submit it again"
)


def new_job_id() -> str:
    return uuid.uuid4().hex


def segment_seed(job_id: str, index: int) -> int:
    """A fixed sampling seed per segment, so that a retried segment regenerates the chunks it had already
    streamed identically (on the same kind of hardware) and can resume after them without a seam."""
    return int.from_bytes(hashlib.sha256(f"{job_id}:{index}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def create_job(
    session: Session,
    *,
    origin: str,
    text: str,
    language: str,
    speaker_kind: str,
    speaker_ref: str,
    params: dict[str, Any],
    segments: list[str],
    epoch: str,
    inline_voice: bytes | None = None,
    tenant: str = DEFAULT_TENANT,
) -> Job:
    """A new job, queued; nothing is dispatched until `shared.dispatch.dispatch` claims its first segments."""
    job = Job(
        id=new_job_id(),
        tenant=tenant,
        origin=origin,
        state=JobState.QUEUED.value,
        text=text,
        language=language,
        speaker_kind=speaker_kind,
        speaker_ref=speaker_ref,
        params=params,
        segments_total=len(segments),
        segments_dispatched=0,
        segments_done=0,
        chunks_done=0,
        audio_samples=0,
        sample_rate=SAMPLE_RATE,
        redis_epoch=epoch,
        created_at=utcnow(),
        inline_voice=inline_voice,
    )
    job.segments = [
        JobSegment(index=i, text=t, state=JobState.QUEUED.value, attempts=0, chunks=0, samples=0)
        for i, t in enumerate(segments)
    ]
    session.add(job)
    return job


def claim_next_segment(job_id: str, window: int) -> int | None:
    """Claim the job's next segment for dispatch while fewer than `window` are queued or running; returns its
    index, or None when the job has ended, has nothing left to dispatch, or its window is full.

    One atomic UPDATE ... RETURNING: the API and several workers finishing segments at once never claim the
    same segment twice.
    """
    with session_scope() as s:
        new_count = s.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.state.in_(ACTIVE_STATES),
                Job.segments_dispatched < Job.segments_total,
                Job.segments_dispatched - Job.segments_done < window,
            )
            .values(segments_dispatched=Job.segments_dispatched + 1)
            .returning(Job.segments_dispatched)
        ).scalar_one_or_none()
    return None if new_count is None else new_count - 1


@dataclass(frozen=True)
class SegmentWork:
    """What a worker needs to synthesize one segment (read once, at the start of the task)."""

    job_id: str
    index: int
    text: str
    language: str
    speaker_kind: str
    speaker_ref: str
    params: dict[str, Any]
    attempts: int
    redis_epoch: str


def start_segment(job_id: str, index: int, worker: str) -> SegmentWork | None:
    """Mark a segment (and its job) running; None when the job has ended or the segment is already done."""
    now = utcnow()
    with session_scope() as s:
        job = s.get(Job, job_id)
        segment = s.get(JobSegment, (job_id, index))
        if job is None or segment is None or job.state not in ACTIVE_STATES:
            return None
        if segment.state == JobState.SUCCEEDED.value:
            return None  # a duplicate delivery of a task that already completed
        segment.attempts += 1
        segment.state, segment.worker = JobState.RUNNING.value, worker
        segment.started_at = segment.started_at or now
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.RUNNING.value, started_at=now)
        )
        return SegmentWork(
            job_id,
            index,
            segment.text,
            job.language,
            job.speaker_kind,
            job.speaker_ref,
            dict(job.params),
            segment.attempts,
            job.redis_epoch,
        )


def inline_voice(job_id: str) -> bytes:
    with session_scope() as s:
        data = s.execute(select(Job.inline_voice).where(Job.id == job_id)).scalar_one_or_none()
    if data is None:
        raise NotFound(f"job {job_id!r} carries no inline voice")
    return data


def segment_succeeded(job_id: str, index: int) -> bool:
    with session_scope() as s:
        state = s.execute(
            select(JobSegment.state).where(JobSegment.job_id == job_id, JobSegment.index == index)
        ).scalar_one_or_none()
    return state == JobState.SUCCEEDED.value


def record_chunk(job_id: str, index: int, samples: int) -> None:
    now = utcnow()
    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                chunks_done=Job.chunks_done + 1,
                audio_samples=Job.audio_samples + samples,
            )
        )
        s.execute(update(Job).where(Job.id == job_id, Job.first_chunk_at.is_(None)).values(first_chunk_at=now))
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index)
            .values(chunks=JobSegment.chunks + 1, samples=JobSegment.samples + samples)
        )


def finish_segment(job_id: str, index: int) -> bool:
    """Record a running segment as done; returns True when it was the job's last one (the job has succeeded).
    Refused (False, nothing changes) when the job has ended or the segment is not running."""
    now = utcnow()
    with session_scope() as s:
        changed = rows_changed(
            s,
            update(JobSegment)
            .where(
                JobSegment.job_id == job_id,
                JobSegment.index == index,
                JobSegment.state.in_(ACTIVE_STATES),
                JobSegment.job_id.in_(select(Job.id).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))),
            )
            .values(state=JobState.SUCCEEDED.value, finished_at=now),
        )
        if not changed:
            return False
        row = s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(segments_done=Job.segments_done + 1)
            .returning(Job.segments_done, Job.segments_total)
        ).one()
        if row.segments_done < row.segments_total:
            return False
        return bool(
            rows_changed(
                s,
                update(Job)
                .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
                .values(state=JobState.SUCCEEDED.value, finished_at=now),
            )
        )


def _stop_open_segments(s: Session, job_id: str, now: datetime) -> None:
    """A job ended: its queued and running segments are stopped, or never start."""
    s.execute(
        update(JobSegment)
        .where(JobSegment.job_id == job_id, JobSegment.state.in_(ACTIVE_STATES))
        .values(state=JobState.CANCELLED.value, finished_at=now)
    )


def fail_segment(job_id: str, index: int, reason: str) -> None:
    """A segment failed for good: the job fails with the segment's error (unless it had already ended)."""
    now = utcnow()
    with session_scope() as s:
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index, JobSegment.state.in_(ACTIVE_STATES))
            .values(state=JobState.FAILED.value, error=reason, finished_at=now)
        )
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.FAILED.value, error=f"segment {index}: {reason}", finished_at=now)
        )
        _stop_open_segments(s, job_id, now)  # the job's other segments are stopped, or never start


def mark_segment_retrying(job_id: str, index: int, reason: str) -> None:
    """A running segment failed and will be tried again: back to queued, with the error that made it retry."""
    with session_scope() as s:
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index, JobSegment.state == JobState.RUNNING.value)
            .values(state=JobState.QUEUED.value, error=reason)
        )


def cancel_job(job_id: str) -> bool:
    """Move an active job to cancelled; False when it had already ended."""
    now = utcnow()
    with session_scope() as s:
        changed = rows_changed(
            s,
            update(Job)
            .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.CANCELLED.value, finished_at=now),
        )
        _stop_open_segments(s, job_id, now)
        return bool(changed)


def fail_if_lost(job_id: str, epoch: str) -> bool:
    """A job queued under an older Redis epoch lost its queue entries and audio: say so in SQL.
    Returns True when this call declared the job lost."""
    now = utcnow()
    with session_scope() as s:
        lost = rows_changed(
            s,
            update(Job)
            .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES), Job.redis_epoch != epoch)
            .values(state=JobState.FAILED.value, error=REDIS_LOST, finished_at=now),
        )
        if lost:
            _stop_open_segments(s, job_id, now)
        return bool(lost)


def fail_lost_jobs(epoch: str) -> int:
    """Sweep every active job of an older epoch (run by workers when they start)."""
    with session_scope() as s:
        return rows_changed(
            s,
            update(Job)
            .where(Job.state.in_(ACTIVE_STATES), Job.redis_epoch != epoch)
            .values(state=JobState.FAILED.value, error=REDIS_LOST, finished_at=utcnow()),
        )


def get_job(job_id: str, *, with_segments: bool = False) -> Job:
    with session_scope() as s:
        query = select(Job).where(Job.id == job_id)
        if with_segments:
            query = query.options(selectinload(Job.segments))
        job = s.execute(query).scalar_one_or_none()
        if job is None:
            raise NotFound(f"no job or session with id {job_id!r}")
        return job
