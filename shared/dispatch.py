"""Enqueueing a job's segments: the one path by which segments reach the broker, used by the API for a new
job's first window and by the workers for each job's next segments.

How the farm schedules: one FIFO queue and a bounded window per job. A job may have at most
`JOB_MAX_INFLIGHT_SEGMENTS` segments queued or running at once (default: one per live worker); each finished
segment enqueues its job's next one, at the back of the queue. So a long job can use the whole farm yet never
floods the queue, and a job submitted later waits for at most one segment per worker.
"""

from __future__ import annotations

from celery import Celery

from shared import jobs
from shared.settings import get_settings
from shared.tasks import SYNTHESIZE_SEGMENT


def inflight_window(live_workers: int) -> int:
    """Segments of one job allowed in the queue or running at once."""
    configured = get_settings().JOB_MAX_INFLIGHT_SEGMENTS
    return configured if configured > 0 else max(1, live_workers)


def dispatch(celery: Celery, job_id: str, live_workers: int) -> list[int]:
    """Claim and enqueue the job's next segments while its window has room; returns the indexes sent."""
    window = inflight_window(live_workers)
    sent: list[int] = []
    while (index := jobs.claim_next_segment(job_id, window)) is not None:
        celery.send_task(SYNTHESIZE_SEGMENT, args=[job_id, index])
        sent.append(index)
    return sent
