"""The reaper: every worker process runs one, and a Redis lock gives one of them the turn at a time.

Each pass finds the work that fell through the cracks and hands it on:

* segments whose lease expired (their worker died or froze) go back to the queue, or fail their job after
  SEGMENT_MAX_RETRIES + 1 attempts;
* segments claimed but never sent to the broker (the dispatcher died, the broker refused), and retries whose
  backoff is over, are sent;
* jobs whose next segment nobody dispatched (whoever finished the previous one died first) are dispatched.

The lock (`ReaperTurn`) keeps passes apart and the farm at one pass per REAPER_INTERVAL_SECONDS, however many
workers it has. It is not what makes a pass safe: two passes that overlap anyway (a worker froze past the lock's
expiry, Redis failed over and forgot it) only send some segments twice, which is harmless (see `Reaper.reap_once`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from celery import Celery
from redis.exceptions import LockError

from shared import jobs, registry, streams
from shared.dispatch import dispatch, send_segment
from shared.redis_client import get_redis
from shared.settings import Settings, get_settings
from workers.loops import quietly

log = logging.getLogger(__name__)

REAPER_LOCK = "xtts:reaper"


class ReaperTurn:
    """The reaper's lock: redis-py's `Lock`, a key holding its owner's token, set only if absent, extended and
    released only by a Lua script that checks the token first, so no worker ever extends or deletes another's.

    A turn lasts at least `seconds` from its start, so the farm runs one pass per interval: at the end of a short
    pass the owner leaves the key to expire at that time. While a pass runs, a keeper thread extends the lock to a
    full `seconds` every third of it, so a pass that takes longer (a slow database) keeps the turn to its end, and
    the lock is released as soon as it ends. A worker that dies in its turn frees it within `seconds`.
    """

    def __init__(self, r: redis.Redis, seconds: float, owner: str) -> None:
        self.seconds = seconds
        self.owner = owner
        self._lock = r.lock(REAPER_LOCK, timeout=seconds, thread_local=False)  # the keeper thread extends it

    @contextmanager
    def taken(self) -> Iterator[bool]:
        """Take the turn if it is free: yields True to the taker, False when another worker has it."""
        if not self._lock.acquire(blocking=False, token=f"{self.owner}:{uuid.uuid4().hex}"):
            yield False
            return
        started = time.monotonic()
        done = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(done,), name="reaper-lock", daemon=True)
        keeper.start()
        try:
            yield True
        finally:
            done.set()
            keeper.join()
            self._end(self.seconds - (time.monotonic() - started))

    def _keep(self, done: threading.Event) -> None:
        while not done.wait(self.seconds / 3):
            try:
                self._lock.reacquire()  # the TTL back to a full `seconds`, if the token is still ours
            except LockError:
                log.warning("the reaper's lock expired during its pass: another reaper may overlap (harmless)")
                return

    def _end(self, left: float) -> None:
        try:
            if left * 1000 >= 1:
                self._lock.extend(left, replace_ttl=True)  # the rest of the turn: expires `seconds` after its start
            else:
                self._lock.release()
        except LockError:  # no longer ours (it expired): nothing of ours to release
            log.debug("the reaper's lock was no longer ours at the end of its pass")


class Reaper:
    def __init__(self, celery: Celery, worker: str) -> None:
        self.celery = celery
        self.worker = worker

    def run(self, stop: threading.Event) -> None:
        """The reaper thread: a pass every REAPER_INTERVAL_SECONDS until `stop`."""
        interval = get_settings().REAPER_INTERVAL_SECONDS
        while not stop.wait(interval):
            quietly(self.reap_once, "reaper")

    def reap_once(self) -> None:
        """One pass of the reaper, if no other worker has the turn.

        Sending a segment twice (two passes overlapping, or a pass and a worker's own dispatch) is safe: the
        second delivery finds the segment's lease held by the first run, or the segment done, and leaves without
        synthesizing anything (`shared.jobs.start_segment` gives a lease only to a queued segment or one whose
        lease expired; a live lease is never taken over). Requeueing an expired lease is one guarded UPDATE that
        only one pass can make, and claims for dispatch are atomic.
        """
        settings, r = get_settings(), get_redis()
        with ReaperTurn(r, settings.REAPER_INTERVAL_SECONDS, self.worker).taken() as ours:
            if ours:
                self._pass(settings, r)

    def _pass(self, settings: Settings, r: redis.Redis) -> None:
        reaped = jobs.reap(settings.SEGMENT_MAX_RETRIES + 1)
        for job_id, index in reaped.requeued:
            log.warning("segment %s/%d lost its worker (lease expired): handing it to another", job_id, index)
        for job_id, index in reaped.failed:
            log.warning("segment %s/%d lost its worker too often: job failed", job_id, index)
            streams.publish_stop(r, job_id, settings.STREAM_TTL_SECONDS)
        for job_id, index in reaped.overtaken:
            log.warning("segment %s/%d was sent but never started (its worker died): sending it again", job_id, index)
        for job_id, index in [*reaped.requeued, *reaped.due, *reaped.overtaken]:
            send_segment(self.celery, job_id, index)
        live = len(registry.live_workers(r))
        for job_id in jobs.stalled_jobs():
            dispatch(self.celery, job_id, live)
        for job_id in jobs.open_texts(older_than=settings.AGENT_WRITER_TTL_SECONDS):
            if not streams.has_writer(r, job_id) and jobs.abandon_text(job_id):
                log.warning("job %s lost the writer of its text (an API process died): cancelled", job_id)
                streams.publish_cancel(r, job_id, settings.STREAM_TTL_SECONDS)
