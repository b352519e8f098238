"""Job lifecycle in SQL, the source of truth: creation, dispatch windows, progress, end states.

Every transition is a single guarded UPDATE (`... WHERE state IN (active states)`), so concurrent
workers, cancels and retries cannot move a job out of an end state or count a segment twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from shared.db import session_scope
from shared.errors import NotFound
from shared.models import ACTIVE_STATES, Job, JobSegment, JobState, utcnow
from shared.settings import get_settings

SendSegment = Callable[[str, int], None]

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
    session: Session, *, origin: str, text: str, language: str, speaker_kind: str, speaker_ref: str,
    params: dict[str, Any], segments: list[str], epoch: str, inline_voice: bytes | None = None, window: int = 1,
) -> Job:
    """A new job whose first `window` segments count as dispatched: the caller enqueues segments
    0 .. job.segments_dispatched - 1 once the row is committed (claiming them here saves a round trip)."""
    job = Job(
        id=new_job_id(), origin=origin, state=JobState.QUEUED.value, text=text, language=language,
        speaker_kind=speaker_kind, speaker_ref=speaker_ref, params=params, segments_total=len(segments),
        segments_dispatched=min(window, len(segments)), segments_done=0, chunks_done=0, audio_samples=0, sample_rate=24000,
        redis_epoch=epoch, created_at=utcnow(), inline_voice=inline_voice,
    )
    job.segments = [
        JobSegment(index=i, text=t, state=JobState.QUEUED.value, attempts=0, chunks=0, samples=0)
        for i, t in enumerate(segments)
    ]
    session.add(job)
    return job


def inflight_window(live_workers: int) -> int:
    """Segments of one job allowed in the queue or running at once: JOB_MAX_INFLIGHT_CHUNKS, or by default
    one per live worker, so a long job can use the whole farm yet never queues more than the farm can
    start, and a job submitted later waits for at most one segment per worker (see the README)."""
    configured = get_settings().JOB_MAX_INFLIGHT_CHUNKS
    return configured if configured > 0 else max(1, live_workers)


def dispatch(job_id: str, window: int, send: SendSegment) -> list[int]:
    """Enqueue the job's next segments while fewer than `window` are queued or running.

    Each claim is one atomic UPDATE ... RETURNING, so the API and several workers finishing segments at
    once never enqueue the same segment twice.
    """
    claimed: list[int] = []
    while True:
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
        if new_count is None:
            return claimed
        send(job_id, new_count - 1)
        claimed.append(new_count - 1)


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
            update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.RUNNING.value, started_at=now)
        )
        return SegmentWork(job_id, index, segment.text, job.language, job.speaker_kind, job.speaker_ref,
                           dict(job.params), segment.attempts, job.redis_epoch)


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
            update(Job).where(Job.id == job_id).values(
                chunks_done=Job.chunks_done + 1, audio_samples=Job.audio_samples + samples,
            )
        )
        s.execute(update(Job).where(Job.id == job_id, Job.first_chunk_at.is_(None)).values(first_chunk_at=now))
        s.execute(
            update(JobSegment).where(JobSegment.job_id == job_id, JobSegment.index == index)
            .values(chunks=JobSegment.chunks + 1, samples=JobSegment.samples + samples)
        )


def finish_segment(job_id: str, index: int) -> bool:
    """Record a segment as done; returns True when it was the job's last one (the job has succeeded)."""
    now = utcnow()
    with session_scope() as s:
        changed = s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index, JobSegment.state != JobState.SUCCEEDED.value)
            .values(state=JobState.SUCCEEDED.value, finished_at=now)
        ).rowcount
        if not changed:
            return False
        row = s.execute(
            update(Job).where(Job.id == job_id)
            .values(segments_done=Job.segments_done + 1)
            .returning(Job.segments_done, Job.segments_total)
        ).one()
        if row.segments_done < row.segments_total:
            return False
        return bool(s.execute(
            update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.SUCCEEDED.value, finished_at=now)
        ).rowcount)


def _stop_open_segments(s: Session, job_id: str, now: datetime) -> None:
    """A job ended: its queued and running segments are stopped, or never start."""
    s.execute(
        update(JobSegment).where(JobSegment.job_id == job_id, JobSegment.state.in_(ACTIVE_STATES))
        .values(state=JobState.CANCELLED.value, finished_at=now)
    )


def fail_segment(job_id: str, index: int, reason: str) -> None:
    """A segment failed for good: the job fails with the segment's error."""
    now = utcnow()
    with session_scope() as s:
        s.execute(
            update(JobSegment).where(JobSegment.job_id == job_id, JobSegment.index == index)
            .values(state=JobState.FAILED.value, error=reason, finished_at=now)
        )
        s.execute(
            update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.FAILED.value, error=f"segment {index}: {reason}", finished_at=now)
        )
        _stop_open_segments(s, job_id, now)  # the job's other segments are stopped, or never start


def mark_segment_retrying(job_id: str, index: int, reason: str) -> None:
    with session_scope() as s:
        s.execute(
            update(JobSegment).where(JobSegment.job_id == job_id, JobSegment.index == index)
            .values(state=JobState.QUEUED.value, error=reason)
        )


def cancel_job(job_id: str) -> bool:
    """Move an active job to cancelled; False when it had already ended."""
    now = utcnow()
    with session_scope() as s:
        changed = s.execute(
            update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.CANCELLED.value, finished_at=now)
        ).rowcount
        _stop_open_segments(s, job_id, now)
        return bool(changed)


def fail_if_lost(job_id: str, epoch: str) -> bool:
    """A job queued under an older Redis epoch lost its queue entries and audio: say so in SQL.
    Returns True when this call declared the job lost."""
    now = utcnow()
    with session_scope() as s:
        lost = s.execute(
            update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES), Job.redis_epoch != epoch)
            .values(state=JobState.FAILED.value, error=REDIS_LOST, finished_at=now)
        ).rowcount
        if lost:
            _stop_open_segments(s, job_id, now)
        return bool(lost)


def fail_lost_jobs(epoch: str) -> int:
    """Sweep every active job of an older epoch (run by workers when they start)."""
    with session_scope() as s:
        return s.execute(
            update(Job).where(Job.state.in_(ACTIVE_STATES), Job.redis_epoch != epoch)
            .values(state=JobState.FAILED.value, error=REDIS_LOST, finished_at=utcnow())
        ).rowcount


def get_job(job_id: str, *, with_segments: bool = False) -> Job:
    with session_scope() as s:
        query = select(Job).where(Job.id == job_id)
        if with_segments:
            query = query.options(selectinload(Job.segments))
        job = s.execute(query).scalar_one_or_none()
        if job is None:
            raise NotFound(f"no job or session with id {job_id!r}")
        return job


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def segment_view(segment: JobSegment, sample_rate: int) -> dict[str, Any]:
    return {
        "index": segment.index, "state": segment.state, "attempts": segment.attempts, "worker": segment.worker,
        "chunks": segment.chunks, "audio_seconds": round(segment.samples / sample_rate, 3),
        "started": _iso(segment.started_at), "finished": _iso(segment.finished_at), "error": segment.error,
        "characters": len(segment.text),
    }


def job_view(job: Job, *, with_segments: bool = False) -> dict[str, Any]:
    """The public JSON shape of a job (also the seed's session status)."""
    view = {
        "id": job.id,
        "session_id": job.id,
        "state": job.state,
        "origin": job.origin,
        "language": job.language,
        "speaker": {"kind": job.speaker_kind, "id": job.speaker_ref},
        "progress": {
            "segments_done": job.segments_done,
            "segments_total": job.segments_total,
            "chunks": job.chunks_done,
            "audio_seconds": round(job.audio_samples / job.sample_rate, 3),
            "audio_samples": job.audio_samples,
        },
        "timestamps": {
            "queued": _iso(job.created_at),
            "started": _iso(job.started_at),
            "first_chunk": _iso(job.first_chunk_at),
            "finished": _iso(job.finished_at),
        },
        "error": job.error,
        "sample_rate": job.sample_rate,
    }
    if with_segments:
        view["segments"] = [segment_view(seg, job.sample_rate) for seg in job.segments]
    return view
