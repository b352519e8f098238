"""The reaper: every worker process runs one, and a Redis lock lets one of them work at a time.

Each pass finds the work that fell through the cracks and hands it on:

* segments whose lease expired (their worker died or froze) go back to the queue, or fail their job after
  SEGMENT_MAX_RETRIES + 1 attempts;
* segments claimed but never sent to the broker (the dispatcher died, the broker refused), and retries whose
  backoff is over, are sent;
* jobs whose next segment nobody dispatched (whoever finished the previous one died first) are dispatched.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from shared import jobs, registry, streams
from shared.dispatch import dispatch, send_segment
from shared.redis_client import get_redis
from shared.settings import get_settings
from workers.loops import quietly

log = logging.getLogger(__name__)

REAPER_LOCK = "xtts:reaper"


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
        """One pass of the reaper, if no other worker is running one right now."""
        settings, r = get_settings(), get_redis()
        if not r.set(REAPER_LOCK, self.worker, nx=True, px=int(settings.REAPER_INTERVAL_SECONDS * 1000)):
            return
        reaped = jobs.reap(settings.SEGMENT_MAX_RETRIES + 1)
        for job_id, index in reaped.requeued:
            log.warning("segment %s/%d lost its worker (lease expired): handing it to another", job_id, index)
        for job_id, index in reaped.failed:
            log.warning("segment %s/%d lost its worker too often: job failed", job_id, index)
            streams.publish_stop(r, job_id, settings.STREAM_TTL_SECONDS)
        for job_id, index in [*reaped.requeued, *reaped.due]:
            send_segment(self.celery, job_id, index)
        live = len(registry.live_workers(r))
        for job_id in jobs.stalled_jobs():
            dispatch(self.celery, job_id, live)
