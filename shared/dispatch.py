"""Enqueueing a job's segments: the one path by which segments reach the broker, used by the API for a new
job's first window, by the workers for each job's next segments, and by the reaper for work that fell through.

How the farm schedules: a FIFO queue per class of work (live before bulk: shared/priority.py) and a bounded window
per job. A job may have at most `JOB_MAX_INFLIGHT_SEGMENTS` segments queued or running at once (default: one per
live worker, and at least two for live work: a listener's next sentence is on its way while the one before it
plays, not sent only once that one has ended); each finished segment enqueues its job's next one, at the back of the
queue. So a long job can use the whole farm yet never floods the queue, and a job submitted later waits for at most
one segment per worker. A live job's first dispatch sends its first segment alone, so that its own continuation
does not compete with the first audio of texts that arrived with it; the worker sends the next one once that
segment's audio has begun (workers/synthesis.py), and runs it by its deadline (workers/scheduler.py).

A claim and its send are two steps: SQL claims the segment, then the broker gets the task, then SQL records
that it was sent. Whatever dies in between (the process, the broker), the claimed segment stays queued and
unsent, and the reaper sends it once it is `SEND_GRACE_SECONDS` overdue.
"""

from __future__ import annotations

from celery import Celery

from shared import jobs
from shared.priority import Priority
from shared.settings import get_settings
from shared.tasks import SYNTHESIZE_SEGMENT

SEND_GRACE_SECONDS = 5.0


# A live text keeps this many segments queued or running even on a farm of one worker (the setting at 0).
LIVE_WINDOW = 2


def inflight_window(live_workers: int, priority: Priority) -> int:
    """Segments of one job allowed in the queue or running at once."""
    configured = get_settings().JOB_MAX_INFLIGHT_SEGMENTS
    if configured > 0:
        return configured
    return max(LIVE_WINDOW if priority is Priority.LIVE else 1, live_workers)


def send_segment(celery: Celery, job_id: str, index: int, priority: Priority | None = None) -> None:
    """Hand one queued segment's task to the broker (the queue of its job's class: looked up when not given) and
    record that it got there."""
    queue = (priority or jobs.priority_of(job_id)).queue
    # Keyword arguments: Flower and the workers' logs show them by name (ids only; the text stays in SQL).
    # ignore_result: a send by name does not know the task ignores it, and would subscribe this process to the
    # result's channel for every segment (nobody reads it: SQL holds job state).
    celery.send_task(SYNTHESIZE_SEGMENT, kwargs={"job_id": job_id, "index": index}, queue=queue, ignore_result=True)
    jobs.mark_sent(job_id, index)


def dispatch(celery: Celery, job_id: str, live_workers: int, *, opening: bool = False) -> list[int]:
    """Claim and enqueue the job's next segments while its window has room; returns the indexes sent. `opening`:
    the job's first dispatch, which sends a live job's first segment alone."""
    priority = jobs.priority_of(job_id)
    window = inflight_window(live_workers, priority)
    most = 1 if opening and priority is Priority.LIVE else window
    sent: list[int] = []
    while len(sent) < most and (index := jobs.claim_next_segment(job_id, window, SEND_GRACE_SECONDS)) is not None:
        send_segment(celery, job_id, index, priority)
        sent.append(index)
    return sent
