"""Admission control: what one request, one tenant and the whole farm may ask of the workers.

- MAX_TOKENS_PER_REQUEST: the audio tokens a request may cost (about 46 ms of audio each), estimated before anything
  is queued. A request over it can never be admitted, so it is a 413 (like MAX_TEXT_CHARS), not a 429 that would
  invite retries; its message says how to split it.
- MAX_JOBS_PER_TENANT: jobs queued or running per tenant; past it, 429 with Retry-After.
- MAX_QUEUED_SEGMENTS: segments not yet synthesized, all jobs of all tenants together; past it, 429 with
  Retry-After, so a backlog of hours cannot build up however many tenants submit.

Live requests (a listener waits) are also measured against the workers' live capacity: the streams each worker
carries faster than real time (workers/capacity.py), summed over the live workers. A live job ahead of a new one
holds a stream until its audio is made, at real time at the slowest; `expected_live_wait` replays that line (each
job taking the first stream to come free, oldest first) to say when the new job's audio should start. The answer
carries it (`X-Expected-Start-Seconds`, and `expected_start` on GET /jobs/{id} while the job waits); past
MAX_LIVE_WAIT_SECONDS the job is deleted again and the request refused with 503 and a Retry-After for when a
stream should be free (`FarmFull`). Before any worker has measured its capacity nothing is promised or refused.

The counts are taken after the new job is committed (and before anything of it is dispatched); a job that puts
a count over its limit is deleted again. Two requests racing for the last place may then both be refused, but the
limits are never exceeded, whatever the number of API processes.
"""

from __future__ import annotations

import heapq
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Response, g
from redis.exceptions import RedisError
from sqlalchemy import case, delete, func, select

from api.errors import FarmFull, TooManyAudioTokens
from shared import jobs, registry
from shared.audio import TOKEN_SECONDS, speech_seconds
from shared.db import session_scope
from shared.errors import TooManyRequests
from shared.models import ACTIVE_STATES, Job, JobState
from shared.params import SynthesisParams
from shared.priority import Priority
from shared.redis_client import get_redis
from shared.settings import get_settings

# What the 429s tell clients: jobs finish in seconds to minutes; a farm-wide backlog takes longer to drain.
JOBS_RETRY_AFTER_SECONDS = 10
SEGMENTS_RETRY_AFTER_SECONDS = 30
EXPECTED_START_HEADER = "X-Expected-Start-Seconds"


def estimate_tokens(segments: list[str], params: SynthesisParams) -> int:
    """Audio tokens a job will cost: each segment's natural length, within its min/max_new_tokens bounds."""
    return sum(params.estimated_tokens(len(seg.strip())) for seg in segments)


def check_request_size(segments: list[str], params: SynthesisParams, pause_ms: int = 0) -> None:
    """Refuses a request whose audio (its segments' and its pauses', counted in audio tokens) is over the limit."""
    limit = get_settings().MAX_TOKENS_PER_REQUEST
    tokens = estimate_tokens(segments, params) + round(pause_ms / 1000 / TOKEN_SECONDS)
    if tokens > limit:
        raise TooManyAudioTokens(
            f"this request would make about {tokens} audio tokens ({tokens * TOKEN_SECONDS / 60:.0f} min of audio); "
            f"the limit is MAX_TOKENS_PER_REQUEST={limit}: split the text into several requests",
            details={"estimated_tokens": tokens, "limit": limit},
        )


def admit(job_id: str, tenant: str) -> None:
    """Counts the tenant's active jobs and the farm's pending segments, the new job (committed) included; deletes
    it and raises TooManyRequests when a limit is exceeded."""
    settings = get_settings()
    with session_scope() as s:
        active = Job.state.in_(ACTIVE_STATES)
        tenant_jobs = s.execute(select(func.count()).where(Job.tenant == tenant, active)).scalar_one()
        # A book's segments wait in SQL, not in the broker, until its window sends them: only those sent count, or
        # one long book would refuse every other request for hours.
        waiting = case(
            (Job.origin == jobs.BOOK_ORIGIN, Job.segments_dispatched - Job.segments_done),
            else_=Job.segments_total - Job.segments_done,
        )
        pending = s.execute(select(func.coalesce(func.sum(waiting), 0)).where(active))
        queued_segments = int(pending.scalar_one())
    refusal = None
    if tenant_jobs > settings.MAX_JOBS_PER_TENANT:
        refusal = TooManyRequests(
            f"this tenant already has MAX_JOBS_PER_TENANT={settings.MAX_JOBS_PER_TENANT} jobs queued or running; "
            f"retry when one has finished (or cancel one)",
            retry_after=JOBS_RETRY_AFTER_SECONDS,
            details={"limit": "MAX_JOBS_PER_TENANT", "value": settings.MAX_JOBS_PER_TENANT},
        )
    elif queued_segments > settings.MAX_QUEUED_SEGMENTS:
        refusal = TooManyRequests(
            f"the farm already has MAX_QUEUED_SEGMENTS={settings.MAX_QUEUED_SEGMENTS} segments waiting for its "
            "workers; retry later",
            retry_after=SEGMENTS_RETRY_AFTER_SECONDS,
            details={"limit": "MAX_QUEUED_SEGMENTS", "value": settings.MAX_QUEUED_SEGMENTS},
        )
    if refusal is not None:
        _withdraw(job_id)
        raise refusal


def _withdraw(job_id: str) -> None:
    with session_scope() as s:
        s.execute(delete(Job).where(Job.id == job_id))  # never dispatched: no worker has seen it


# --- live streams -------------------------------------------------------------------------------------------------
def live_capacity(workers: list[dict[str, Any]]) -> int | None:
    """The live streams the live workers carry faster than real time; None while any of them has not measured it
    yet (an idle newcomer has room the sum would not show)."""
    measured: list[int | None] = [(w.get("batch") or {}).get("live_capacity") for w in workers]
    counted = [int(c) for c in measured if c is not None]
    return sum(counted) if measured and len(counted) == len(measured) else None


def expected_live_wait(capacity: int, ahead: list[tuple[bool, float]]) -> float:
    """Seconds until a new live job gets a stream: `capacity` streams, and the jobs ahead of it (started first,
    then the waiting ones, each oldest first) as (started, audio seconds still to make), each holding a stream for
    that long (real time: what a stream at capacity makes at the least)."""
    free_at = [0.0] * max(1, capacity)
    for _started, seconds in sorted(ahead, key=lambda job: not job[0]):  # stable: keeps each group's order
        heapq.heappush(free_at, heapq.heappop(free_at) + seconds)
    return free_at[0]


def live_wait(job: Job, workers: list[dict[str, Any]]) -> float | None:
    """Seconds until this live job's audio should start, or None when the workers have not measured capacity."""
    capacity = live_capacity(workers)
    if capacity is None:
        return None
    ahead = [(started, speech_seconds(chars)) for started, chars in jobs.live_line(job)]
    return round(expected_live_wait(capacity, ahead), 1)


def admit_live(job: Job, workers: list[dict[str, Any]]) -> None:
    """For a new live job: refuses it (deleted again) when it would wait past MAX_LIVE_WAIT_SECONDS, else tells
    the response when its audio should start."""
    if job.priority != Priority.LIVE.value:
        return
    try:
        wait = live_wait(job, workers)
    except Exception:
        _withdraw(job.id)  # committed but not dispatched: a request that failed leaves no job running behind it
        raise
    if wait is None:
        return
    limit = get_settings().MAX_LIVE_WAIT_SECONDS
    if limit and wait > limit:
        _withdraw(job.id)
        raise FarmFull(
            f"every live stream the workers can carry without stalling is taken for about {wait:.0f} s, longer than "
            f"MAX_LIVE_WAIT_SECONDS={limit:g}; retry then, or send the text as bulk work",
            retry_after=math.ceil(wait),
            details={"expected_wait_seconds": wait, "live_capacity": live_capacity(workers)},
        )
    g.expected_live_wait = wait


def expected_start(job: Job) -> datetime | None:
    """When a live job that waits for its first audio should get it (None for the others, and while Redis, where
    the workers say their capacity, does not answer: the job's status is read from SQL alone)."""
    if job.priority != Priority.LIVE.value or job.state != JobState.QUEUED.value or job.first_chunk_at is not None:
        return None
    try:
        workers = registry.live_workers(get_redis())
    except RedisError:
        return None
    wait = live_wait(job, workers)
    return None if wait is None else datetime.now(UTC) + timedelta(seconds=wait)


def _tell_expected_start(response: Response) -> Response:
    wait = g.pop("expected_live_wait", None)
    if wait is not None:
        response.headers[EXPECTED_START_HEADER] = f"{wait:g}"
    return response


def register(app: Flask) -> None:
    app.after_request(_tell_expected_start)
