"""Admission control: what one request, one tenant and the whole farm may ask of the workers.

- MAX_TOKENS_PER_REQUEST: the audio tokens a request may cost (about 46 ms of audio each), estimated before anything
  is queued. A request over it can never be admitted, so it is a 413 (like MAX_TEXT_CHARS), not a 429 that would
  invite retries; its message says how to split it.
- MAX_JOBS_PER_TENANT: jobs queued or running per tenant; past it, 429 with Retry-After.
- MAX_QUEUED_SEGMENTS: segments not yet synthesized, all jobs of all tenants together; past it, 429 with
  Retry-After, so a backlog of hours cannot build up however many tenants submit.

The two counts are taken after the new job is committed (and before anything of it is dispatched); a job that puts
a count over its limit is deleted again. Two requests racing for the last place may then both be refused, but the
limits are never exceeded, whatever the number of API processes.
"""

from __future__ import annotations

import math

from sqlalchemy import delete, func, select

from api.errors import TooManyAudioTokens
from shared.audio import TOKEN_SECONDS, TOKENS_PER_CHAR
from shared.db import session_scope
from shared.errors import TooManyRequests
from shared.models import ACTIVE_STATES, Job
from shared.params import SynthesisParams
from shared.settings import get_settings

# XTTS's GPT stops a segment at 605 audio tokens (about 28 s) whatever the text.
MAX_TOKENS_PER_SEGMENT = 605
# What the 429s tell clients: jobs finish in seconds to minutes; a farm-wide backlog takes longer to drain.
JOBS_RETRY_AFTER_SECONDS = 10
SEGMENTS_RETRY_AFTER_SECONDS = 30


def estimate_tokens(segments: list[str], params: SynthesisParams) -> int:
    """Audio tokens a job will cost: each segment's natural length, within its min/max_new_tokens bounds."""
    low = params.min_new_tokens or 1
    high = params.max_new_tokens or MAX_TOKENS_PER_SEGMENT
    return sum(min(max(math.ceil(TOKENS_PER_CHAR * len(seg.strip())), low), high) for seg in segments)


def check_request_size(segments: list[str], params: SynthesisParams) -> None:
    limit = get_settings().MAX_TOKENS_PER_REQUEST
    tokens = estimate_tokens(segments, params)
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
        pending = s.execute(select(func.coalesce(func.sum(Job.segments_total - Job.segments_done), 0)).where(active))
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
        with session_scope() as s:
            s.execute(delete(Job).where(Job.id == job_id))  # never dispatched: no worker has seen it
        raise refusal
