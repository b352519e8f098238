"""Synthesizing one segment of a job: the work behind the `xtts.synthesize_segment` task.

Audio goes to the segment's Redis stream first (the listener is waiting), then progress goes to SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import redis

from shared import jobs, streams
from shared.audio import SAMPLE_WIDTH
from shared.params import SynthesisParams
from shared.settings import Settings
from voices_store.cache import VoiceCache
from workers.engine import VoiceLatents, XttsEngine, pcm16
from workers.errors import SynthesisError
from workers.voices import resolve_voice

log = logging.getLogger(__name__)


class Outcome(Enum):
    DONE = "done"  # segment streamed completely
    JOB_DONE = "job_done"  # ... and it was the job's last
    SKIPPED = "skipped"  # the job had ended (cancelled, failed) or the segment was already done
    CANCELLED = "cancelled"  # stopped mid-way by a cancel
    RETRY = "retry"  # failed; the caller schedules another attempt
    FAILED = "failed"  # failed for good; the job is failed


@dataclass
class SegmentResult:
    outcome: Outcome
    error: str | None = None
    attempts: int = 0


def run_segment(
    engine: XttsEngine,
    cache: VoiceCache[VoiceLatents],
    settings: Settings,
    r: redis.Redis,
    job_id: str,
    index: int,
    worker: str,
) -> SegmentResult:
    writer = streams.StreamWriter(r, job_id, index, settings.STREAM_TTL_SECONDS, settings.STREAM_MAXLEN)
    work = jobs.start_segment(job_id, index, worker)
    if work is None:
        if jobs.segment_succeeded(job_id, index):
            writer.ensure_end()  # redelivered after a crash between recording success and ending the stream
        return SegmentResult(Outcome.SKIPPED)
    epoch = streams.current_epoch(r)
    if work.redis_epoch != epoch:
        jobs.fail_if_lost(job_id, epoch)
        return SegmentResult(Outcome.SKIPPED)  # queued before Redis lost its data: its listeners are gone too
    max_attempts = settings.SEGMENT_MAX_RETRIES + 1
    if work.attempts > max_attempts:
        # Only a worker that died mid-segment (requeued by Celery) gets here: stop the crash loop.
        return _fail(writer, work, f"worker lost {work.attempts - 1} times while synthesizing this segment")
    try:
        return _synthesize(engine, cache, r, writer, work)
    except SynthesisError as exc:
        return _fail(writer, work, str(exc))
    except Exception as exc:  # the model or a service failed: retry a bounded number of times
        reason = f"{type(exc).__name__}: {exc}"
        log.exception("segment %s/%d failed (attempt %d of %d)", job_id, index, work.attempts, max_attempts)
        if work.attempts < max_attempts:
            jobs.mark_segment_retrying(job_id, index, reason)
            return SegmentResult(Outcome.RETRY, reason, work.attempts)
        return _fail(writer, work, reason)


def _synthesize(
    engine: XttsEngine,
    cache: VoiceCache[VoiceLatents],
    r: redis.Redis,
    writer: streams.StreamWriter,
    work: jobs.SegmentWork,
) -> SegmentResult:
    params = SynthesisParams.model_validate(work.params)
    voice = resolve_voice(engine, cache, work)
    # A retried segment regenerates identically (fixed seed) and skips what listeners already have.
    already = writer.last_seq()
    seq = 0
    for wav in engine.stream(work.text, work.language, voice, params, seed=jobs.segment_seed(work.job_id, work.index)):
        if streams.should_stop(r, work.job_id):
            log.info(
                "job %s ended elsewhere (cancelled or failed): segment %d stopped after %d chunks",
                work.job_id,
                work.index,
                seq,
            )
            return SegmentResult(Outcome.CANCELLED, attempts=work.attempts)
        seq += 1
        if seq <= already:
            continue
        pcm = pcm16(wav)
        writer.audio(seq, pcm)
        jobs.record_chunk(work.job_id, work.index, len(pcm) // SAMPLE_WIDTH)
    # SQL first: a listener that sees the stream end and then asks for the job's state sees it done.
    last = jobs.finish_segment(work.job_id, work.index)
    writer.end(seq + 1)
    return SegmentResult(Outcome.JOB_DONE if last else Outcome.DONE, attempts=work.attempts)


def _fail(writer: streams.StreamWriter, work: jobs.SegmentWork, reason: str) -> SegmentResult:
    jobs.fail_segment(work.job_id, work.index, reason)
    try:
        streams.publish_stop(writer.r, work.job_id, writer.ttl)
        writer.error(writer.last_seq() + 1, reason)
    except redis.RedisError:
        log.warning("could not publish the error entry of %s/%d", work.job_id, work.index, exc_info=True)
    return SegmentResult(Outcome.FAILED, reason, work.attempts)
