"""Delivering a job's audio to HTTP clients: reading its chunks as they come, the waiting policy, and its events
(framed by api/framing.py)."""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator

from sqlalchemy.exc import OperationalError

from api.answers import SharedAnswers
from api.client import ClientConnection
from api.fanout import stream_hub
from api.framing import sse_event
from api.lifecycle import ServerLeaving, lifecycle
from api.telemetry import PlaybackMeter
from shared import jobs, streams
from shared.audio import SAMPLE_WIDTH
from shared.errors import AudioExpired, FarmError, InvalidCursor, JobCancelled, NotFound, SynthesisFailed
from shared.models import ACTIVE_STATES, Job, JobState
from shared.priority import Priority
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.streams import Cursor

log = logging.getLogger(__name__)


class _NothingMore(Exception):
    """The job has succeeded and the reader has been waiting past its last audio: its stream is over."""


class Watchdog:
    """Runs whenever a reader waited a whole block with nothing new: raises once the job cannot progress, its
    audio expired, nobody is left to listen (ClientGone), or this API process is leaving (ServerLeaving). A
    database that does not answer is waited out, within STREAM_IDLE_TIMEOUT_SECONDS of the last progress."""

    # Blocks a reader may wait with nothing new after the job succeeded (SQL records success just before the last
    # end entry is written, so the first such block may be that race); after them nothing more can come.
    BLOCKS_AFTER_SUCCESS = 2

    def __init__(self, job_id: str, client: ClientConnection | None = None) -> None:
        self.job_id = job_id
        self.client = client
        self.idle_timeout = get_settings().STREAM_IDLE_TIMEOUT_SECONDS
        self._chunks = -1
        self._since = time.monotonic()
        self._blocks_after_success = 0

    def __call__(self, index: int) -> None:
        if lifecycle.streams_must_end():
            raise ServerLeaving
        if self.client is not None:
            self.client.check()
        try:
            job = recent_jobs.get(self.job_id)
        except OperationalError:
            log.warning("database not answering while job %s waits for audio; still waiting", self.job_id)
            self._give_up_if_idle("the database is not answering")
            return
        if job.state in ACTIVE_STATES and self._expired(index):
            raise AudioExpired(audio_expired_message(self.job_id))
        if job.state == JobState.FAILED.value:
            raise SynthesisFailed(f"synthesis of job {job.id} failed: {job.error or 'unknown error'}")
        if job.state == JobState.CANCELLED.value:
            raise JobCancelled(f"job {job.id} was cancelled")
        if job.state == JobState.SUCCEEDED.value:
            if not streams.all_segments_exist(get_redis(), job.id, job.segments_total):
                raise AudioExpired(audio_expired_message(self.job_id))
            self._blocks_after_success += 1
            if self._blocks_after_success >= self.BLOCKS_AFTER_SUCCESS:
                raise _NothingMore
        if job.chunks_done != self._chunks:
            self._chunks, self._since = job.chunks_done, time.monotonic()
        else:
            self._give_up_if_idle(f"job {job.id} is {job.state} and not progressing")

    def _expired(self, index: int) -> bool:
        """The segment being read is done in SQL but its stream is gone: its audio expired (not merely late)."""
        return recent_jobs.expired(self.job_id, index)

    def _give_up_if_idle(self, why: str) -> None:
        if time.monotonic() - self._since > self.idle_timeout:
            raise SynthesisFailed(f"no audio for {self.idle_timeout} s: {why}")


class RecentJobs:
    """What this process's waiting listeners last learned of each job, for a read block: a thousand listeners of
    one job, each waking every STREAM_READ_BLOCK_MS with nothing new, ask SQL and Redis once between them rather
    than a thousand times (their answers are as fresh as a block's wait already makes them)."""

    def __init__(self) -> None:
        self._answers = SharedAnswers(lambda: get_settings().STREAM_READ_BLOCK_MS / 1000)

    def get(self, job_id: str) -> Job:
        job: Job = self._answers.answer((job_id, None), lambda: current_job(job_id))
        return job

    def expired(self, job_id: str, index: int) -> bool:
        def ask() -> bool:
            if get_redis().exists(streams.segment_key(job_id, index)):
                return False
            return jobs.segment_state(job_id, index) == JobState.SUCCEEDED.value

        expired: bool = self._answers.answer((job_id, index), ask)
        return expired


recent_jobs = RecentJobs()


def _priority(job_id: str) -> str:
    """The class a reader's listening counts under (telemetry's label): the job's, as this process last learned it
    (a reader that made the job live may count its first half block as bulk); live once the job is gone."""
    try:
        return str(recent_jobs.get(job_id).priority)
    except NotFound:
        return Priority.LIVE.value


def current_job(job_id: str, *, tenant: str | None = None, with_segments: bool = False) -> Job:
    """The job as SQL knows it, after declaring it lost (and stopping its workers) if Redis restarted
    without its data since the job was queued. Reads only, unless the job is found lost. With `tenant`, another
    tenant's job is NotFound, exactly as a job that does not exist (ids never leak across tenants)."""
    job = jobs.get_job(job_id, with_segments=with_segments)
    if tenant is not None and job.tenant != tenant:
        raise NotFound(f"no job or session with id {job_id!r}")
    if job.state in ACTIVE_STATES:
        r = get_redis()
        epoch = streams.current_epoch(r)
        if job.redis_epoch != epoch and jobs.fail_if_lost(job_id, epoch):
            streams.publish_stop(r, job_id, get_settings().STREAM_TTL_SECONDS)
            job = jobs.get_job(job_id, with_segments=with_segments)
    return job


def audio_expired_message(job_id: str) -> str:
    ttl = get_settings().STREAM_TTL_SECONDS
    return (
        f"the audio of job {job_id} is no longer kept "
        f"(streams expire STREAM_TTL_SECONDS={ttl} s after their last chunk)"
    )


def job_chunks(
    job_id: str, segments_total: int, cursor: Cursor | None = None, client: ClientConnection | None = None
) -> Generator[streams.Chunk]:
    """A job's audio chunks after `cursor`, in order, waiting for workers as needed. With `client`, raises
    ClientGone soon after the client closes its connection: between chunks, and every STREAM_READ_BLOCK_MS while
    waiting."""
    settings = get_settings()
    lifecycle.attach(job_id, segments_total)  # its audio stays while it is being listened to
    chunks = streams.read_chunks(
        stream_hub(),
        job_id,
        segments_total,
        cursor,
        block_ms=settings.STREAM_READ_BLOCK_MS,
        on_idle=Watchdog(job_id, client),
    )
    # The class its listening counts under, as this process's readers of the job last learned it.
    meter = PlaybackMeter(job_id, priority=lambda: _priority(job_id))
    try:
        for chunk in chunks:
            meter.sent(chunk.pcm)
            yield chunk
            if lifecycle.streams_must_end():
                raise ServerLeaving
            if client is not None:
                client.check()
    except _NothingMore:
        return
    finally:
        meter.close()
        lifecycle.detach(job_id, segments_total)


def job_audio(
    job_id: str, segments_total: int, cursor: Cursor | None = None, client: ClientConnection | None = None
) -> Generator[tuple[Cursor, bytes]]:
    """`job_chunks` as (cursor, pcm); closing it closes the reader at once."""
    chunks = job_chunks(job_id, segments_total, cursor, client)
    try:
        for chunk in chunks:
            yield chunk.cursor, chunk.pcm
    finally:
        chunks.close()


def job_pcm(job_id: str, segments_total: int, client: ClientConnection | None = None) -> Iterator[bytes]:
    """`job_audio` from the start, the PCM only; closing it closes the reader at once (its listener detaches)."""
    chunks = job_audio(job_id, segments_total, client=client)
    try:
        for _cursor, pcm in chunks:
            yield pcm
    finally:
        chunks.close()


def check_cursor(job: Job, cursor: Cursor) -> None:
    """Refuse a cursor no client can have received: past the job's segments, or past the audio a segment has
    published (a reader would wait for audio that never comes), and answer 410 at once when the audio from the
    cursor on is known to have expired."""
    if cursor.segment > job.segments_total or (cursor.segment == job.segments_total and cursor.seq > 0):
        raise InvalidCursor(f"cursor {cursor} is past the job's {job.segments_total} segments")
    if cursor.segment == job.segments_total:
        return
    r = get_redis()
    if not r.exists(streams.segment_key(job.id, cursor.segment)):
        if jobs.segment_state(job.id, cursor.segment) == JobState.SUCCEEDED.value:
            raise AudioExpired(audio_expired_message(job.id))
        return  # not started yet: the reader waits for it
    published = streams.last_seq(r, job.id, cursor.segment)
    # A cursor with its samples may be past what the stream holds now: a failover to a replica that lacked the
    # last chunks, which a new run is making again (the reader waits for them).
    if cursor.seq > published and cursor.samples is None:
        raise InvalidCursor(
            f"cursor {cursor} is past the audio published so far: segment {cursor.segment} has {published} chunks"
        )


def cancel(job_id: str) -> bool:
    """Cancel an active job: its workers stop within one chunk, its readers wake. False if it had already ended."""
    if not jobs.cancel_job(job_id):
        return False
    streams.publish_cancel(get_redis(), job_id, get_settings().STREAM_TTL_SECONDS)
    return True


# The `audio` events made lately, by chunk: the listeners of one job that the stream hub answers together get the
# very same chunk (the same bytes object), and each would encode it again (base64 and JSON: a tenth of an event's
# cost). A few dozen chunks are in flight at any moment; each kept event holds its chunk too.
ENCODED_KEPT = 128
_encoded: OrderedDict[tuple[str, int], tuple[bytes, bytes]] = OrderedDict()


def sse_audio(cursor: Cursor, pcm: bytes) -> bytes:
    """The `audio` event of a job's stream: one chunk, its id the cursor a client resumes from."""
    key = (str(cursor), id(pcm))
    kept = _encoded.get(key)
    if kept is not None and kept[0] is pcm:  # the same chunk (an id alone may be a freed object's)
        return kept[1]
    event = _sse_audio(cursor, pcm)
    _encoded[key] = (pcm, event)
    while len(_encoded) > ENCODED_KEPT:
        with contextlib.suppress(KeyError):  # another thread may have taken the oldest first
            _encoded.popitem(last=False)
    return event


def _sse_audio(cursor: Cursor, pcm: bytes) -> bytes:
    data = {
        "segment": cursor.segment,
        "seq": cursor.seq,
        "samples": len(pcm) // SAMPLE_WIDTH,
        "pcm_s16le_base64": base64.b64encode(pcm).decode(),
    }
    return sse_event(data, "audio", event_id=str(cursor))


def sse_error(exc: FarmError) -> bytes:
    """The `error` event: the same body as an HTTP error response, `{"error": {status, code, message, details}}`."""
    return sse_event({"error": exc.body()}, "error")
