"""The job state machine in SQL, the source of truth: creation, claims, progress, end states.

Every transition is a single guarded UPDATE (`... WHERE state IN (active states)`), so concurrent
workers, cancels and retries cannot move a job out of an end state or count a segment twice.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session, aliased, selectinload

from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH
from shared.db import rows_changed, session_scope
from shared.errors import NotFound
from shared.models import ACTIVE_STATES, Job, JobSegment, JobState, KeptAudio, utcnow
from shared.params import SynthesisParams
from shared.priority import Priority
from shared.tenants import DEFAULT_TENANT
from shared.utc import as_utc
from shared.voice_kind import VoiceKind

# Jobs whose segments' audio the worker keeps in SQL: a book's audio is assembled long after its streams expire.
BOOK_ORIGIN, BOOK_REDO_ORIGIN = "book", "book_redo"
AUDIO_KEPT_ORIGINS = frozenset({BOOK_ORIGIN, BOOK_REDO_ORIGIN})
REDIS_LOST = (
    "lost: Redis restarted without its data, taking this job's queue entries and audio with it; submit it again"
)


def new_job_id() -> str:
    return uuid.uuid4().hex


def segment_seed(job_id: str, index: int, seed: int | None = None) -> int:
    """The segment's sampling seed: the request's `seed` plus the segment's index, or one drawn from the job's id.
    A segment synthesized alone or in any batch draws the same random numbers (each has its own generator), so a
    seeded request is reproducible. Resuming does not rely on it: a new run replays the audio tokens already
    delivered."""
    if seed is not None:
        return (seed + index) & 0x7FFFFFFF
    return int.from_bytes(hashlib.sha256(f"{job_id}:{index}".encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class NewSegment:
    """A segment as a request says it: its text, and where it is said otherwise than its job (None: as the job)."""

    text: str
    language: str | None = None
    voice_kind: VoiceKind | None = None
    voice_ref: str | None = None
    speed: float | None = None
    pause_ms: int = 0


def _new_segment(index: int, segment: str | NewSegment, job_id: str | None = None) -> JobSegment:
    said = NewSegment(segment) if isinstance(segment, str) else segment
    return JobSegment(
        job_id=job_id,
        index=index,
        text=said.text,
        language=said.language,
        voice_kind=said.voice_kind.value if said.voice_kind is not None else None,
        voice_ref=said.voice_ref,
        speed=said.speed,
        pause_ms=said.pause_ms,
        state=JobState.QUEUED.value,
        attempts=0,
        chunks=0,
        samples=0,
    )


def create_job(
    session: Session,
    *,
    origin: str,
    text: str,
    language: str,
    voice_kind: VoiceKind,
    voice_ref: str,
    params: dict[str, Any],
    segments: Sequence[str | NewSegment],
    epoch: str,
    inline_voice: bytes | None = None,
    tenant: str = DEFAULT_TENANT,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
    priority: Priority = Priority.LIVE,
    priority_stated: bool = False,
    text_open: bool = False,
) -> Job:
    """A new job, queued; nothing is dispatched until `shared.dispatch.dispatch` claims its first segments.
    `text_open`: its text is still being written (`append_segments`, `close_text`)."""
    job = Job(
        id=new_job_id(),
        tenant=tenant,
        idempotency_key=idempotency_key,
        request_digest=request_digest,
        origin=origin,
        priority=priority.value,
        priority_stated=priority_stated,
        state=JobState.QUEUED.value,
        text=text,
        language=language,
        voice_kind=voice_kind,
        voice_ref=voice_ref,
        params=params,
        text_open=text_open,
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
    job.segments = [_new_segment(i, segment) for i, segment in enumerate(segments)]
    session.add(job)
    return job


def claim_next_segment(job_id: str, window: int, send_grace: float) -> int | None:
    """Claim the job's next segment for dispatch while fewer than `window` are queued or running; returns its
    index, or None when the job has ended, has nothing left to dispatch, or its window is full.

    One atomic UPDATE ... RETURNING: the API and several workers finishing segments at once never claim the
    same segment twice. The segment is due `send_grace` seconds from now: if whoever claimed it has not
    marked it sent by then (it crashed, the broker refused), the reaper sends it.
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
        if new_count is None:
            return None
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == new_count - 1)
            .values(due_at=utcnow() + timedelta(seconds=send_grace))
        )
    return int(new_count) - 1


def priority_of(job_id: str) -> Priority:
    """The job's class of work (live if the job is gone: a send for it is refused by the worker anyway)."""
    with session_scope() as s:
        value = s.execute(select(Job.priority).where(Job.id == job_id)).scalar_one_or_none()
    return Priority(value) if value else Priority.LIVE


def make_live(job_id: str) -> bool:
    """A reader attached to the job's stream: a bulk job whose request did not say `bulk` becomes live (its next
    segments go to the live queue; those already queued or running keep their class). True if it changed."""
    with session_scope() as s:
        return (
            rows_changed(
                s,
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.priority == Priority.BULK.value,
                    Job.priority_stated.is_(False),
                    Job.state.in_(ACTIVE_STATES),
                )
                .values(priority=Priority.LIVE.value),
            )
            > 0
        )


def mark_sent(job_id: str, index: int) -> None:
    """The segment's task reached the broker."""
    with session_scope() as s:
        s.execute(
            update(JobSegment)
            .where(JobSegment.job_id == job_id, JobSegment.index == index, JobSegment.state == JobState.QUEUED.value)
            .values(sent_at=utcnow())
        )


@dataclass(frozen=True)
class SegmentWork:
    """What a worker run needs to synthesize one segment (read once, when it takes the segment's lease)."""

    job_id: str
    index: int
    run: str  # the lease owner: every write of this run is fenced by it
    text: str
    language: str
    voice_kind: VoiceKind
    voice_ref: str
    params: dict[str, Any]
    attempts: int
    redis_epoch: str
    segments_total: int
    tenant: str = DEFAULT_TENANT
    queued_at: datetime | None = None  # when the API accepted the job (for the time to first audio)
    priority: Priority = Priority.LIVE
    sent_at: datetime | None = None  # when its task reached the broker (for the time it waited there)
    # When its listener runs out of the job's earlier audio (`playback_deadline`); None: as soon as possible.
    deadline: datetime | None = None
    pause_ms: int = 0  # a pause (no text): this much silence
    keep_audio: bool = False  # its job's audio outlives the streams: the worker keeps it in SQL (KeptAudio)


class Refused(enum.Enum):
    """Why a run did not get a segment."""

    GONE = "gone"  # no such job or segment
    ENDED = "ended"  # the job was cancelled or failed
    DONE = "done"  # the segment has succeeded (a duplicate delivery)
    HELD = "held"  # another live run holds its lease (a duplicate delivery while the first run is alive)


def new_run_id(worker: str) -> str:
    return f"{uuid.uuid4().hex[:12]}@{worker}"[:64]


def start_segment(job_id: str, index: int, worker: str, run: str, lease_seconds: float) -> SegmentWork | Refused:
    """Take the segment's lease and mark it (and its job) running; or say why not.

    The lease goes to this run if the segment is queued, or running under a lease that has expired (its
    worker died). A live lease is never taken over, so at most one run synthesizes a segment at a time, and a
    duplicate delivery leaves without using up an attempt.
    """
    now = utcnow()
    with session_scope() as s:
        taken = rows_changed(
            s,
            update(JobSegment)
            .where(
                JobSegment.job_id == job_id,
                JobSegment.index == index,
                (JobSegment.state == JobState.QUEUED.value)
                | ((JobSegment.state == JobState.RUNNING.value) & (JobSegment.lease_expires_at < now)),
                JobSegment.job_id.in_(select(Job.id).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))),
            )
            .values(
                state=JobState.RUNNING.value,
                worker=worker,
                lease_owner=run,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=JobSegment.attempts + 1,
                started_at=func.coalesce(JobSegment.started_at, now),
            ),
        )
        job = s.get(Job, job_id)
        segment = s.get(JobSegment, (job_id, index))
        if job is None or segment is None:
            return Refused.GONE
        if not taken:
            if job.state not in ACTIVE_STATES:
                return Refused.ENDED
            return Refused.DONE if segment.state == JobState.SUCCEEDED.value else Refused.HELD
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.RUNNING.value, started_at=now)
        )
        return SegmentWork(
            job_id,
            index,
            run,
            segment.text,
            segment.language or job.language,
            VoiceKind(segment.voice_kind or job.voice_kind),
            segment.voice_ref or job.voice_ref,
            _params(job, segment),
            segment.attempts,
            job.redis_epoch,
            job.segments_total,
            job.tenant,
            job.created_at,
            Priority(job.priority),
            segment.sent_at,
            playback_deadline(s, job, index, now),
            segment.pause_ms,
            job.origin in AUDIO_KEPT_ORIGINS,
        )


def _params(job: Job, segment: JobSegment) -> dict[str, Any]:
    """The job's synthesis parameters, at the segment's own speed where it has one."""
    params = dict(job.params)
    if segment.speed is not None:
        params["speed"] = segment.speed
    return params


def playback_deadline(s: Session, job: Job, index: int, now: datetime) -> datetime | None:
    """When the listener of a live job runs out of audio if this segment has none by then: playback started with the
    job's first chunk (or starts with it, about now, when none has come yet) and goes on through every earlier
    segment's audio: all of it for a finished one, at least the estimate of its text for the others. None for a
    job's first segment and for bulk work: as soon as possible, no listener's audio in hand to measure against.
    The estimate keeps to the request's bounds (min/max_new_tokens, speed): a text's length alone would promise
    seconds of audio that a pinned length never makes, and the segment would start late. The listener may have
    stalled already, which moves its clock later: the deadline errs on the early side."""
    if index == 0 or job.priority != Priority.LIVE.value:
        return None
    params = SynthesisParams.model_validate(job.params)
    earlier = s.execute(
        select(JobSegment.state, JobSegment.samples, func.length(JobSegment.text), JobSegment.pause_ms).where(
            JobSegment.job_id == job.id, JobSegment.index < index
        )
    ).all()
    ahead = sum(
        samples / SAMPLE_RATE
        if state == JobState.SUCCEEDED.value
        else max(samples / SAMPLE_RATE, pause_ms / 1000 if pause_ms else params.estimated_seconds(chars))
        for state, samples, chars, pause_ms in earlier
    )
    return as_utc(job.first_chunk_at or now) + timedelta(seconds=ahead)


def renew_leases(runs: list[str], lease_seconds: float) -> set[str]:
    """Extend the leases of these runs (a worker's heartbeat); returns the runs that still hold theirs."""
    if not runs:
        return set()
    with session_scope() as s:
        held = s.execute(
            update(JobSegment)
            .where(JobSegment.lease_owner.in_(runs), JobSegment.state == JobState.RUNNING.value)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            .returning(JobSegment.lease_owner)
        ).scalars()
        return {run for run in held if run is not None}


def _owned(job_id: str, index: int, run: str) -> ColumnElement[bool]:
    return (JobSegment.job_id == job_id) & (JobSegment.index == index) & (JobSegment.lease_owner == run)


def inline_voice(job_id: str) -> bytes:
    with session_scope() as s:
        data = s.execute(select(Job.inline_voice).where(Job.id == job_id)).scalar_one_or_none()
    if data is None:
        raise NotFound(f"job {job_id!r} carries no inline voice")
    return data


def record_chunk(job_id: str, index: int, run: str, samples: int) -> bool:
    """Count one published audio chunk; False when the run no longer owns the segment (nothing counted)."""
    now = utcnow()
    with session_scope() as s:
        if not rows_changed(
            s,
            update(JobSegment)
            .where(_owned(job_id, index, run))
            .values(chunks=JobSegment.chunks + 1, samples=JobSegment.samples + samples),
        ):
            return False
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(chunks_done=Job.chunks_done + 1, audio_samples=Job.audio_samples + samples)
        )
        s.execute(update(Job).where(Job.id == job_id, Job.first_chunk_at.is_(None)).values(first_chunk_at=now))
    return True


def reconcile_progress(job_id: str, index: int, run: str, chunks: int, samples: int) -> None:
    """Make SQL count what the segment's stream holds (a run that died may have published a chunk it could not
    record): the new run's view, read from the stream after it claimed it, is the truth."""
    with session_scope() as s:
        row = s.execute(
            select(JobSegment.chunks, JobSegment.samples).where(_owned(job_id, index, run)).with_for_update()
        ).one_or_none()
        if row is None or (row.chunks, row.samples) == (chunks, samples):
            return
        s.execute(update(JobSegment).where(_owned(job_id, index, run)).values(chunks=chunks, samples=samples))
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                chunks_done=Job.chunks_done + (chunks - row.chunks),
                audio_samples=Job.audio_samples + (samples - row.samples),
            )
        )


@dataclass(frozen=True)
class SegmentAudio:
    """A segment's whole audio (16-bit PCM) and its attention marks as shared/streams.py encodes them."""

    pcm: bytes
    marks: bytes | None = None


def finish_segment(job_id: str, index: int, run: str, kept: SegmentAudio | None = None) -> bool:
    """Record the run's segment as done, with its audio `kept` in SQL where its job keeps audio (in the same
    transaction: a segment is never done without it); returns True when it was the job's last one (the job has
    succeeded). Refused (False, nothing changes) when the job has ended or the run no longer owns a running
    segment."""
    now = utcnow()
    with session_scope() as s:
        changed = rows_changed(
            s,
            update(JobSegment)
            .where(
                _owned(job_id, index, run),
                JobSegment.state == JobState.RUNNING.value,
                JobSegment.job_id.in_(select(Job.id).where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))),
            )
            .values(state=JobState.SUCCEEDED.value, finished_at=now, lease_owner=None, lease_expires_at=None),
        )
        if not changed:
            return False
        if kept is not None:
            samples = len(kept.pcm) // SAMPLE_WIDTH
            s.merge(KeptAudio(job_id=job_id, index=index, pcm=kept.pcm, samples=samples, marks=kept.marks))
        row = s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(segments_done=Job.segments_done + 1)
            .returning(Job.segments_done, Job.segments_total, Job.text_open)
        ).one()
        if row.segments_done < row.segments_total or row.text_open:
            return False
        return _succeed(s, job_id, now)


def _succeed(s: Session, job_id: str, now: datetime) -> bool:
    return bool(
        rows_changed(
            s,
            update(Job)
            .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.SUCCEEDED.value, finished_at=now),
        )
    )


class TextClosed(Exception):
    """The job's text is no longer open (closed, or the job has ended): nothing can be added to it."""


def append_segments(job_id: str, text: str, segments: Sequence[str | NewSegment]) -> int:
    """Add segments (and the text they come from) to a job whose text is open; returns the first one's index.
    Counting them and adding them is one transaction, and the count is taken by the UPDATE that locks the job's row:
    a worker finishing a segment meanwhile sees the job either before or after, never half of it."""
    with session_scope() as s:
        total = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.text_open.is_(True), Job.state.in_(ACTIVE_STATES))
            .values(segments_total=Job.segments_total + len(segments), text=Job.text + text)
            .returning(Job.segments_total)
        ).scalar_one_or_none()
        if total is None:
            raise TextClosed(f"job {job_id} takes no more text")
        first = int(total) - len(segments)
        s.add_all([_new_segment(first + i, segment, job_id) for i, segment in enumerate(segments)])
    return first


def close_text(job_id: str) -> bool:
    """Its writer says the job's text is complete: the job succeeds now if every segment is done (none, too), else
    when its last segment is. True when this call ended the job. The same row lock as `finish_segment`: whichever
    of the two comes second sees both the last segment done and the text closed."""
    now = utcnow()
    with session_scope() as s:
        row = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.text_open.is_(True))
            .values(text_open=False)
            .returning(Job.segments_done, Job.segments_total)
        ).one_or_none()
        if row is None or row.segments_done < row.segments_total:
            return False
        return _succeed(s, job_id, now)


def _stop_open_segments(s: Session, job_id: str, now: datetime) -> None:
    """A job ended: its queued and running segments are stopped, or never start."""
    s.execute(
        update(JobSegment)
        .where(JobSegment.job_id == job_id, JobSegment.state.in_(ACTIVE_STATES))
        .values(state=JobState.CANCELLED.value, finished_at=now, lease_owner=None, lease_expires_at=None)
    )


def fail_segment(job_id: str, index: int, reason: str, run: str | None = None) -> None:
    """A segment failed for good: the job fails with the segment's error (unless it had already ended).
    `run`: only if that run still owns the segment (None: whoever holds it, e.g. the reaper)."""
    now = utcnow()
    with session_scope() as s:
        owned = _owned(job_id, index, run) if run else (JobSegment.job_id == job_id) & (JobSegment.index == index)
        if not rows_changed(
            s,
            update(JobSegment)
            .where(owned, JobSegment.state.in_(ACTIVE_STATES))
            .values(state=JobState.FAILED.value, error=reason, finished_at=now, lease_owner=None),
        ):
            return
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.FAILED.value, error=f"segment {index}: {reason}", finished_at=now)
        )
        _stop_open_segments(s, job_id, now)  # the job's other segments are stopped, or never start


def _queue_again(job_id: str, index: int, run: str, delay: float, **changes: Any) -> bool:
    """The run's segment back to queued, its lease released, due to be sent in `delay` seconds (by the reaper,
    unless its caller sends it first). False when the run no longer held it."""
    with session_scope() as s:
        return bool(
            rows_changed(
                s,
                update(JobSegment)
                .where(_owned(job_id, index, run), JobSegment.state == JobState.RUNNING.value)
                .values(
                    state=JobState.QUEUED.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    sent_at=None,
                    due_at=utcnow() + timedelta(seconds=delay),
                    **changes,
                ),
            )
        )


def requeue_segment(job_id: str, index: int, run: str, reason: str, delay: float) -> bool:
    """The run failed and the segment gets another attempt after `delay` seconds, keeping the error that made it
    retry. False when the run no longer owned it."""
    return _queue_again(job_id, index, run, delay, error=reason)


def give_back(job_id: str, index: int, run: str) -> bool:
    """A worker that shuts down hands a segment back without using up an attempt, to be sent at once."""
    return _queue_again(job_id, index, run, 0.0, attempts=JobSegment.attempts - 1)


@dataclass(frozen=True)
class Reaped:
    requeued: list[tuple[str, int]]  # lease expired: queued again
    failed: list[tuple[str, int]]  # lease expired too often: the job failed
    due: list[tuple[str, int]]  # queued, never sent (or a retry whose time came): to send
    overtaken: list[tuple[str, int]] = field(default_factory=list)  # sent, then lost with a worker: to send again


def reap(max_attempts: int, limit: int = 100) -> Reaped:
    """Find the work that fell through: running segments whose lease expired (their worker died or froze) are
    queued again, or fail their job after `max_attempts`; queued segments due but never sent are listed."""
    now = utcnow()
    requeued, failed = [], []
    with session_scope() as s:
        expired = s.execute(
            select(JobSegment.job_id, JobSegment.index, JobSegment.attempts)
            .where(JobSegment.state == JobState.RUNNING.value, JobSegment.lease_expires_at < now)
            .limit(limit)
        ).all()
    for job_id, index, attempts in expired:
        if attempts >= max_attempts:
            fail_segment(job_id, index, f"its worker was lost {attempts} times while synthesizing it")
            failed.append((job_id, index))
            continue
        with session_scope() as s:
            if rows_changed(
                s,
                update(JobSegment)
                .where(
                    JobSegment.job_id == job_id,
                    JobSegment.index == index,
                    JobSegment.state == JobState.RUNNING.value,
                    JobSegment.lease_expires_at < now,
                )
                .values(state=JobState.QUEUED.value, lease_owner=None, lease_expires_at=None, sent_at=None, due_at=now),
            ):
                requeued.append((job_id, index))
    due = _queued_segments(limit, JobSegment.sent_at.is_(None), JobSegment.due_at <= now)
    return Reaped(requeued, failed, due, overtaken(now))


def _queued_segments(limit: int, *conditions: ColumnElement[bool]) -> list[tuple[str, int]]:
    """(job id, index) of queued segments of active jobs that meet `conditions`."""
    with session_scope() as s:
        rows = s.execute(
            select(JobSegment.job_id, JobSegment.index)
            .join(Job, Job.id == JobSegment.job_id)
            .where(Job.state.in_(ACTIVE_STATES), JobSegment.state == JobState.QUEUED.value, *conditions)
            .limit(limit)
        ).all()
    return [(job_id, index) for job_id, index in rows]


def overtaken(now: datetime, grace: float = 5.0, limit: int = 100) -> list[tuple[str, int]]:
    """Live segments sent to the broker but never started although a live segment sent after them, more than
    `grace` seconds ago, was taken by a worker (running or done). The live queue is first in, first out, so such a
    segment's task was taken by a worker that died before it started it (it sits in the broker's unacknowledged set
    until its visibility timeout, an hour): sending it again is the only way its listener gets it soon. A worker
    sends a live text's next segment while the one before it plays, so a worker killed then holds one. Sending twice
    is harmless (see the reaper)."""
    later, later_job = aliased(JobSegment), aliased(Job)
    started_later = (
        select(later.job_id)
        .join(later_job, later_job.id == later.job_id)
        .where(
            later_job.priority == Priority.LIVE.value,
            later.sent_at > JobSegment.sent_at,
            later.sent_at < now - timedelta(seconds=grace),
            later.state.in_((JobState.RUNNING.value, JobState.SUCCEEDED.value)),
        )
        .exists()
    )
    return _queued_segments(limit, Job.priority == Priority.LIVE.value, JobSegment.sent_at.is_not(None), started_later)


def _active_jobs(limit: int, *conditions: ColumnElement[bool]) -> list[str]:
    """Ids of active jobs that meet `conditions`."""
    with session_scope() as s:
        return list(s.execute(select(Job.id).where(Job.state.in_(ACTIVE_STATES), *conditions).limit(limit)).scalars())


def stalled_jobs(limit: int = 100) -> list[str]:
    """Active jobs with segments left to dispatch and none claimed and unfinished: whoever should have
    dispatched their next segment died first. Dispatching them again is harmless (claims are atomic)."""
    return _active_jobs(
        limit, Job.segments_dispatched < Job.segments_total, Job.segments_dispatched == Job.segments_done
    )


WRITER_LOST = "its text was still being written when its writer (a voice agent's connection) was lost"


def open_texts(older_than: float, limit: int = 100) -> list[str]:
    """Active jobs whose text is open and that were created more than `older_than` seconds ago."""
    return _active_jobs(limit, Job.text_open.is_(True), Job.created_at < utcnow() - timedelta(seconds=older_than))


def abandon_text(job_id: str) -> bool:
    """An open job whose writer is gone: cancelled, saying so (its text can never be complete). True if it ended."""
    now = utcnow()
    with session_scope() as s:
        changed = rows_changed(
            s,
            update(Job)
            .where(Job.id == job_id, Job.text_open.is_(True), Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.CANCELLED.value, error=WRITER_LOST, finished_at=now, text_open=False),
        )
        if changed:
            _stop_open_segments(s, job_id, now)
        return bool(changed)


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


def segment_state(job_id: str, index: int) -> str | None:
    with session_scope() as s:
        return s.execute(
            select(JobSegment.state).where(JobSegment.job_id == job_id, JobSegment.index == index)
        ).scalar_one_or_none()


@dataclass(frozen=True)
class SegmentStart:
    """What a segment says, and how many samples of its job's audio come before it."""

    text: str
    start: int


def segment_start(job_id: str, index: int) -> SegmentStart | None:
    """Read once every earlier segment has ended (its count of samples is final then)."""
    with session_scope() as s:
        text = s.execute(
            select(JobSegment.text).where(JobSegment.job_id == job_id, JobSegment.index == index)
        ).scalar_one_or_none()
        if text is None:
            return None
        before = s.execute(
            select(func.coalesce(func.sum(JobSegment.samples), 0)).where(
                JobSegment.job_id == job_id, JobSegment.index < index
            )
        ).scalar_one()
    return SegmentStart(text, int(before))


def job_for_key(tenant: str, idempotency_key: str) -> Job | None:
    """The job a tenant made with this Idempotency-Key, if any."""
    with session_scope() as s:
        return s.execute(
            select(Job).where(Job.tenant == tenant, Job.idempotency_key == idempotency_key)
        ).scalar_one_or_none()


def get_job(job_id: str, *, with_segments: bool = False) -> Job:
    with session_scope() as s:
        query = select(Job).where(Job.id == job_id)
        if with_segments:
            query = query.options(selectinload(Job.segments))
        job = s.execute(query).scalar_one_or_none()
        if job is None:
            raise NotFound(f"no job or session with id {job_id!r}")
        return job


def live_line(until: Job) -> list[tuple[bool, int]]:
    """The live jobs ahead of `until` (active, created before it, oldest first), each as (started, characters of
    text its unfinished segments still have to speak): what a new live job waits behind."""
    with session_scope() as s:
        rows = s.execute(
            select(Job.first_chunk_at.is_not(None), func.coalesce(func.sum(func.length(JobSegment.text)), 0))
            .join(JobSegment, JobSegment.job_id == Job.id)
            .where(
                Job.priority == Priority.LIVE.value,
                Job.state.in_(ACTIVE_STATES),
                JobSegment.state.in_(ACTIVE_STATES),
                Job.id != until.id,
                Job.created_at <= until.created_at,
            )
            .group_by(Job.id, Job.first_chunk_at, Job.created_at)
            .order_by(Job.created_at, Job.id)
        ).all()
    return [(bool(started), int(chars)) for started, chars in rows]
