"""Synthesizing one segment of a job: the work behind the `xtts.synthesize_segment` task.

The task's thread takes the segment's lease in SQL, becomes its stream's only writer in Redis, reads what an
earlier run already delivered, and hands the segment to the process's batch scheduler; then it publishes each
audio chunk the scheduler produces: to the segment's Redis stream first (the listener is waiting), then the
progress to SQL. Every write is fenced by the run's lease, so a run that lost its segment stops at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

import redis

from shared import jobs, logs, result_cache, streams
from shared.alignment import AttentionCursor, Mark
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH, TOKEN_SECONDS
from shared.params import SynthesisParams
from shared.priority import Priority
from shared.settings import Settings
from shared.utc import as_utc
from voices_store.cache import VoiceCache
from workers.engine import VoiceLatents, XttsEngine, pcm16
from workers.errors import SynthesisError
from workers.metrics import WorkerMetrics
from workers.scheduler import BatchScheduler, Cancelled, Chunk, Segment
from workers.voices import resolve_voice, voice_revision

log = logging.getLogger(__name__)
# A kept-audio job's segment stream outlives its end this long: listeners of the job's stream catch up; the audio
# itself is in SQL.
KEPT_STREAM_TTL_SECONDS = 600


class Outcome(Enum):
    DONE = "done"  # segment streamed completely
    JOB_DONE = "job_done"  # ... and it was the job's last
    SKIPPED = "skipped"  # the job had ended, the segment was done, or another live run holds it
    CANCELLED = "cancelled"  # stopped mid-way by a cancel
    LOST = "lost"  # another run took the segment over (this run's lease had expired)
    HANDED_BACK = "handed_back"  # the worker is shutting down: queued again for another worker, attempt unused
    RESUMED = "resumed"  # its stream lost chunks (a Redis failover): queued again to resume after the ones it holds
    RETRY = "retry"  # failed; queued again for another attempt
    FAILED = "failed"  # failed for good; the job is failed


@dataclass
class SegmentResult:
    outcome: Outcome
    error: str | None = None
    attempts: int = 0


class Leases(Protocol):
    """The worker's register of the runs whose leases its heartbeat renews."""

    def hold(self, run: str) -> None: ...
    def release(self, run: str) -> None: ...
    def lost(self, run: str) -> bool: ...


@dataclass(frozen=True)
class Workshop:
    """What a worker process brings to every segment it runs."""

    engine: XttsEngine
    scheduler: BatchScheduler
    cache: VoiceCache[VoiceLatents]
    leases: Leases
    settings: Settings
    worker: str
    shutting_down: threading.Event
    metrics: WorkerMetrics | None = None


def run_segment(
    shop: Workshop, r: redis.Redis, job_id: str, index: int, playing: Callable[[], None] | None = None
) -> SegmentResult:
    """Synthesize the segment; `playing` is called once a live segment's first chunk is out (its listener hears
    it): the worker sends the job's next segment then (shared/dispatch.py)."""
    settings = shop.settings
    run = jobs.new_run_id(shop.worker)
    work = jobs.start_segment(job_id, index, shop.worker, run, settings.SEGMENT_LEASE_SECONDS)
    if not isinstance(work, jobs.Refused):
        logs.bind(tenant=work.tenant)
    if isinstance(work, jobs.Refused):
        if work is jobs.Refused.DONE:  # redelivered after a crash between recording success and ending the stream
            _writer(r, job_id, index, run, settings).ensure_end()
        log.info("segment %s/%d skipped: %s", job_id, index, work.value)
        return SegmentResult(Outcome.SKIPPED)
    shop.leases.hold(run)
    _observe_queue_wait(shop.metrics, work)
    try:
        return _run(shop, r, work, playing)
    finally:
        shop.leases.release(run)


def _writer(r: redis.Redis, job_id: str, index: int, run: str, settings: Settings) -> streams.StreamWriter:
    return streams.StreamWriter(r, job_id, index, run, settings.STREAM_TTL_SECONDS)


def _run(shop: Workshop, r: redis.Redis, work: jobs.SegmentWork, playing: Callable[[], None] | None) -> SegmentResult:
    epoch = streams.current_epoch(r)
    if work.redis_epoch != epoch:
        jobs.fail_if_lost(work.job_id, epoch)
        return SegmentResult(Outcome.SKIPPED)  # queued before Redis lost its data: its listeners are gone too
    max_attempts = shop.settings.SEGMENT_MAX_RETRIES + 1
    writer = _writer(r, work.job_id, work.index, work.run, shop.settings)
    if work.attempts > max_attempts:
        # Only a segment whose runs keep dying gets here (a crash loop): stop it.
        return _fail(writer, work, f"its worker was lost {work.attempts - 1} times while synthesizing it")
    try:
        if work.pause_ms and not work.text:
            return _pause(shop, r, writer, work)
        return _synthesize_or_reuse(shop, r, writer, work, playing)
    except streams.NotOwner:
        log.warning("segment %s/%d was taken over by another run", work.job_id, work.index)
        return SegmentResult(Outcome.LOST, attempts=work.attempts)
    except streams.StreamGap:
        # Not the segment's fault: its attempt is not used. A new run replays the tokens of the chunks the stream
        # holds and goes on from there.
        log.warning(
            "segment %s/%d: its stream lost the last chunks this run wrote (Redis failed over to a replica that had "
            "not received them): resumed from the chunks it holds",
            work.job_id,
            work.index,
        )
        jobs.give_back(work.job_id, work.index, work.run)
        return SegmentResult(Outcome.RESUMED, attempts=work.attempts)
    except SynthesisError as exc:
        return _fail(writer, work, exc.message)
    except TimeoutError:
        limit = shop.settings.SEGMENT_HARD_TIME_LIMIT
        return _fail(writer, work, f"the model produced no audio within SEGMENT_HARD_TIME_LIMIT={limit:g} s")
    except Exception as exc:  # the model or a service failed: retry a bounded number of times
        reason = f"{type(exc).__name__}: {exc}"
        log.exception("segment %s/%d failed (attempt %d of %d)", work.job_id, work.index, work.attempts, max_attempts)
        if work.attempts < max_attempts:
            jobs.requeue_segment(work.job_id, work.index, work.run, reason, delay=min(2.0 * work.attempts, 10.0))
            return SegmentResult(Outcome.RETRY, reason, work.attempts)
        return _fail(writer, work, reason)


def _synthesize_or_reuse(
    shop: Workshop,
    r: redis.Redis,
    writer: streams.StreamWriter,
    work: jobs.SegmentWork,
    playing: Callable[[], None] | None,
) -> SegmentResult:
    """A seeded segment's audio from the result cache where it is there (or once the run making it now has stored
    it); else synthesized, and stored for the next request that asks for it."""
    delivered = writer.claim()  # this run alone writes from now on; what earlier runs delivered is resumed
    jobs.reconcile_progress(work.job_id, work.index, work.run, delivered.last_seq, delivered.samples)
    if delivered.complete:  # a run that wrote the last chunk died before the end (a replayed result, say)
        return _finish(shop, r, writer, work, delivered.last_seq, list(delivered.marks or ()) or None)
    key = _cache_key(shop, work)
    if key is None:
        return _synthesize(shop, r, writer, work, playing, delivered)
    lead = shop.settings.SEGMENT_LEASE_SECONDS
    claim = result_cache.claim(r, key, work.run, lead)
    shared = claim is result_cache.Claim.BUSY
    if shared:
        with result_cache.lead_changes(r, key) as wait:
            # Claimed again once subscribed: a store or release between the first claim and the subscription
            # would otherwise be heard only at the next timeout.
            while (claim := result_cache.claim(r, key, work.run, lead)) is result_cache.Claim.BUSY:
                if (stopped := _must_stop(shop, r, work, delivered.last_seq)) is not None:
                    return stopped
                wait(min(1.0, lead / 3))
    if isinstance(claim, result_cache.Hit):
        result_cache.count_hit(r, claim, shared=shared)
        return _replay(shop, r, writer, work, claim, playing, delivered)
    try:
        return _synthesize(shop, r, writer, work, playing, delivered, key)
    finally:
        result_cache.release(r, key, work.run)  # a no-op once stored


def _cache_key(shop: Workshop, work: jobs.SegmentWork) -> str | None:
    """The segment's result-cache key; None where its audio is not reused (no explicit seed, no cache, or a voice
    deleted since: the run fails as it would have)."""
    seed = work.params.get("seed")
    if shop.settings.RESULT_CACHE_MB <= 0 or seed is None:
        return None
    voice = voice_revision(work)
    if voice is None:
        return None
    return result_cache.entry_key(
        work.tenant,
        model=shop.engine.fingerprint,
        voice=voice,
        language=work.language,
        text=work.text,
        params=work.params,
        seed=jobs.segment_seed(work.job_id, work.index, seed),
    )


def _must_stop(shop: Workshop, r: redis.Redis, work: jobs.SegmentWork, seq: int) -> SegmentResult | None:
    """Why a run stops before its next chunk (`seq`: its last so far), if it must, whether it synthesizes or waits
    for another run's audio: its job ended elsewhere, its lease was lost, or its worker is shutting down."""
    if streams.should_stop(r, work.job_id):
        log.info("job %s ended elsewhere: segment %d stopped after chunk %d", work.job_id, work.index, seq)
        return SegmentResult(Outcome.CANCELLED, attempts=work.attempts)
    if shop.leases.lost(work.run):
        return SegmentResult(Outcome.LOST, attempts=work.attempts)
    if shop.shutting_down.is_set():
        jobs.give_back(work.job_id, work.index, work.run)
        log.info("worker shutting down: segment %s/%d handed back after chunk %d", work.job_id, work.index, seq)
        return SegmentResult(Outcome.HANDED_BACK, attempts=work.attempts)
    return None


def _replay(
    shop: Workshop,
    r: redis.Redis,
    writer: streams.StreamWriter,
    work: jobs.SegmentWork,
    hit: result_cache.Hit,
    playing: Callable[[], None] | None,
    delivered: streams.Delivered,
) -> SegmentResult:
    """The stored audio as the segment's stream: one chunk, after whatever an earlier run of it delivered."""
    marks = streams.decode_marks(hit.marks)
    seq = delivered.last_seq
    rest = hit.pcm[delivered.samples * SAMPLE_WIDTH :]
    if rest:
        seq += 1
        later = None if marks is None else [(said, at) for said, at in marks if at >= delivered.samples]
        writer.audio(seq, rest, part_end=True, last=True, marks=later, start=delivered.samples)
        if not jobs.record_chunk(work.job_id, work.index, work.run, len(rest) // SAMPLE_WIDTH):
            return SegmentResult(Outcome.LOST, attempts=work.attempts)
        if seq == 1 and work.index == 0:
            _observe_first_audio(shop.metrics, work)
        if work.priority is Priority.LIVE and playing is not None:
            _started_playing(playing, work)
    log.info("segment %s/%d: %d bytes of audio reused", work.job_id, work.index, len(hit.pcm))
    return _finish(shop, r, writer, work, seq, list(marks) if marks else None)


def _finish(
    shop: Workshop,
    r: redis.Redis,
    writer: streams.StreamWriter,
    work: jobs.SegmentWork,
    seq: int,
    marks: list[Mark] | None,
) -> SegmentResult:
    """The segment's audio is all in its stream, up to chunk `seq`: record it done, then end the stream."""
    # SQL first: a listener that sees the stream end and then asks for the job's state sees it done.
    last = jobs.finish_segment(work.job_id, work.index, work.run, _kept(r, work, marks, seq))
    writer.end(seq + 1, marks)
    _keep_streams(r, work, shop.settings)
    return SegmentResult(Outcome.JOB_DONE if last else Outcome.DONE, attempts=work.attempts)


def _synthesize(
    shop: Workshop,
    r: redis.Redis,
    writer: streams.StreamWriter,
    work: jobs.SegmentWork,
    playing: Callable[[], None] | None,
    delivered: streams.Delivered,
    cache_key: str | None = None,
) -> SegmentResult:
    settings = shop.settings
    started = time.monotonic()
    params = SynthesisParams.model_validate(work.params)
    voice = resolve_voice(shop.engine, shop.cache, work)
    seed = jobs.segment_seed(work.job_id, work.index, params.seed)
    live = work.priority is Priority.LIVE
    deadline = _monotonic(work.deadline)
    segment = shop.engine.segment(
        work.run, work.text, work.language, voice, params, seed, delivered, live=live, deadline=deadline
    )
    handle = shop.scheduler.submit(segment)
    timing = AttentionTiming(segment, delivered)
    seq = first_seq = delivered.last_seq
    samples = 0
    log.debug(
        "segment %s/%d: run %s starts (attempt %d, %d characters, resuming after chunk %d)",
        work.job_id,
        work.index,
        work.run,
        work.attempts,
        len(work.text),
        first_seq,
    )
    try:
        for chunk in handle.events(timeout=settings.SEGMENT_HARD_TIME_LIMIT):
            if (stopped := _must_stop(shop, r, work, seq)) is not None:
                return stopped
            if time.monotonic() - started - handle.paused_seconds > settings.SEGMENT_SOFT_TIME_LIMIT:
                limit = settings.SEGMENT_SOFT_TIME_LIMIT
                return _fail(writer, work, f"synthesis took longer than SEGMENT_SOFT_TIME_LIMIT={limit:g} s")
            seq += 1
            pcm = pcm16(chunk.audio)
            last = chunk.part_end and chunk.part == len(segment.parts) - 1
            marks = timing.marks(chunk, len(pcm) // SAMPLE_WIDTH)
            writer.audio(seq, pcm, chunk.tokens, chunk.part, chunk.part_end, last, marks, delivered.samples + samples)
            if not jobs.record_chunk(work.job_id, work.index, work.run, len(pcm) // SAMPLE_WIDTH):
                return SegmentResult(Outcome.LOST, attempts=work.attempts)
            if cache_key is not None:  # runs waiting for this audio wait on while it is being made
                result_cache.renew(r, cache_key, work.run, settings.SEGMENT_LEASE_SECONDS)
            samples += len(pcm) // SAMPLE_WIDTH
            if seq == 1 and work.index == 0:
                _observe_first_audio(shop.metrics, work)
            if seq == first_seq + 1 and live and playing is not None:
                _started_playing(playing, work)
    except Cancelled:
        return SegmentResult(Outcome.CANCELLED, attempts=work.attempts)
    finally:
        handle.cancel()  # no-op once finished; otherwise the scheduler drops the stream at its next step
    _observe_run(shop.metrics, time.monotonic() - started, samples)
    result = _finish(shop, r, writer, work, seq, timing.made or None)
    if cache_key is not None:
        _store(r, work, cache_key, seq, timing.made or None, settings)
    return result


def _store(
    r: redis.Redis, work: jobs.SegmentWork, key: str, seq: int, marks: list[Mark] | None, settings: Settings
) -> None:
    """The finished segment's whole audio (earlier runs' chunks included) into the result cache: the segment is
    done whatever happens here, so a failure only costs a later request its hit."""
    try:
        pcm = _whole_audio(r, work, seq)
        limit = settings.RESULT_CACHE_MB * 1024 * 1024
        result_cache.store(r, key, work.run, pcm, streams.encode_marks(marks), limit)
    except (redis.RedisError, streams.StreamGap):
        log.warning("segment %s/%d: its audio could not be kept for reuse", work.job_id, work.index, exc_info=True)


def _whole_audio(r: redis.Redis, work: jobs.SegmentWork, seq: int) -> bytes:
    """The segment's PCM as its stream holds it, which must be every chunk up to `seq`: Redis that failed over
    since the last write may have lost the last ones (StreamGap: the segment is then resumed, not kept short)."""
    return streams.segment_pcm(r, work.job_id, work.index, through=seq)


class AttentionTiming:
    """The attention marks of a segment's chunks (shared.alignment), one cursor per part. A mark's sample is where
    its audio token's audio starts in the part (HiFi-GAN makes the same samples per token throughout); the decoder
    holds a chunk's last tokens back for the next one, so a mark past the audio sent so far waits for the chunk that
    carries its audio. A part resumed from replayed tokens starts in the middle of its text, where no cursor can pick
    it up: it is timed by estimate."""

    def __init__(self, segment: Segment, delivered: streams.Delivered) -> None:
        self._cursors = [AttentionCursor(None if part.replay else part.char_ends) for part in segment.parts]
        self._token_samples = TOKEN_SECONDS * SAMPLE_RATE * segment.length_scale
        self._last_part = len(segment.parts) - 1
        self._at = delivered.samples  # the segment's audio so far
        self._part, self._part_start = -1, self._at
        self._waiting: list[Mark] = []
        self.made: list[Mark] = list(delivered.marks or ())  # every mark of the segment, earlier runs' included

    def marks(self, chunk: Chunk, samples: int) -> list[Mark] | None:
        """The marks of a chunk of `samples`; None where its part's timing is an estimate."""
        if chunk.part != self._part:
            self._part, self._part_start = chunk.part, self._at
        cursor = self._cursors[chunk.part]
        steps = cursor.advance(chunk.focus)
        self._at += samples
        for said, token in steps or ():
            self._waiting.append((said, self._part_start + round(token * self._token_samples)))
        if steps is None and not self._waiting:
            return None
        due = [(said, min(at, self._at)) for said, at in self._waiting if at <= self._at or chunk.part_end]
        self._waiting = self._waiting[len(due) :]
        if chunk.part_end and chunk.part < self._last_part and cursor.char_ends:
            due.append((cursor.char_ends[-1], self._at))  # the next part starts after all of this one is said
        self.made += due
        return due


def _pause(shop: Workshop, r: redis.Redis, writer: streams.StreamWriter, work: jobs.SegmentWork) -> SegmentResult:
    """A pause (SSML's <break>, a `[pause:...]` tag): its silence as one chunk of digital zeros, without the model.
    A run that resumes it finds the chunk delivered already and only ends the stream."""
    delivered = writer.claim()
    jobs.reconcile_progress(work.job_id, work.index, work.run, delivered.last_seq, delivered.samples)
    seq = delivered.last_seq
    if seq == 0:
        seq = 1
        samples = round(work.pause_ms * SAMPLE_RATE / 1000)
        writer.audio(seq, bytes(samples * SAMPLE_WIDTH), part_end=True, last=True, start=0)
        if not jobs.record_chunk(work.job_id, work.index, work.run, samples):
            return SegmentResult(Outcome.LOST, attempts=work.attempts)
    return _finish(shop, r, writer, work, seq, None)


def _keep_streams(r: redis.Redis, work: jobs.SegmentWork, settings: Settings) -> None:
    """The job's audio stays STREAM_TTL_SECONDS after its last segment, however long the job took; but a job whose
    audio is kept in SQL (a book) lets each segment's stream go KEPT_STREAM_TTL_SECONDS after it ends: a book of
    hours would otherwise hold all its audio in Redis until it ends (and renew every stream at every segment)."""
    if work.keep_audio:
        r.expire(
            streams.segment_key(work.job_id, work.index), min(KEPT_STREAM_TTL_SECONDS, settings.STREAM_TTL_SECONDS)
        )
    else:
        streams.keep_job_audio(r, work.job_id, work.segments_total, settings.STREAM_TTL_SECONDS)


def _kept(r: redis.Redis, work: jobs.SegmentWork, marks: list[Mark] | None, seq: int) -> jobs.SegmentAudio | None:
    """The segment's whole audio (earlier runs' chunks included, up to chunk `seq`) where its job keeps audio in
    SQL (a book)."""
    if not work.keep_audio:
        return None
    return jobs.SegmentAudio(_whole_audio(r, work, seq), streams.encode_marks(marks or None))


def _started_playing(playing: Callable[[], None], work: jobs.SegmentWork) -> None:
    try:
        playing()
    except Exception:  # the audio goes on; the job's next segment is sent when this one ends, or by the reaper
        log.warning("could not send the segment after %s/%d early", work.job_id, work.index, exc_info=True)


def _monotonic(deadline: datetime | None) -> float | None:
    """A wall-clock deadline from SQL on this process's monotonic clock (the scheduler's), or None."""
    if deadline is None:
        return None
    return time.monotonic() + (as_utc(deadline) - datetime.now(UTC)).total_seconds()


def _observe_first_audio(metrics: WorkerMetrics | None, work: jobs.SegmentWork) -> None:
    """The job's first audio (its first segment's first chunk, by its first run): what its listener waited."""
    if metrics is None or work.queued_at is None:
        return
    queued = as_utc(work.queued_at)
    # Clocks of the API's and this worker's machines: a skew shows here (keep them on NTP).
    metrics.first_audio.observe(max(0.0, (datetime.now(UTC) - queued).total_seconds()))


def _observe_queue_wait(metrics: WorkerMetrics | None, work: jobs.SegmentWork) -> None:
    """How long the segment's task waited in the broker (and in this worker before its turn), by class of work.
    No send time yet means the run started before its sender recorded the send (`shared.dispatch.send_segment`
    records it after the broker took the task): it waited no time worth counting, and is counted as 0."""
    if metrics is None:
        return
    waited = 0.0
    if work.sent_at is not None:
        sent = as_utc(work.sent_at)
        waited = max(0.0, (datetime.now(UTC) - sent).total_seconds())
    metrics.queue_wait.labels(work.priority.value).observe(waited)


def _observe_run(metrics: WorkerMetrics | None, seconds: float, samples: int) -> None:
    if metrics is None or samples == 0:
        return
    audio = samples / SAMPLE_RATE
    metrics.audio_seconds.inc(audio)
    metrics.real_time_factor.observe(seconds / audio)


def _fail(writer: streams.StreamWriter, work: jobs.SegmentWork, reason: str) -> SegmentResult:
    jobs.fail_segment(work.job_id, work.index, reason, run=work.run)
    try:
        streams.publish_stop(writer.r, work.job_id, writer.ttl)
        writer.error(writer.claim().last_seq + 1, reason)
    except (redis.RedisError, streams.NotOwner, streams.StreamGap):
        log.warning("could not publish the error entry of %s/%d", work.job_id, work.index, exc_info=True)
    return SegmentResult(Outcome.FAILED, reason, work.attempts)
