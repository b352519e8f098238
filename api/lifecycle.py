"""An API process's lifetime beyond its requests: graceful shutdown, and keeping attached listeners' audio.

**Graceful shutdown.** gunicorn stops accepting connections on SIGTERM and waits `graceful_timeout` for the
requests in flight. A stream of a long job may outlast that, so `gunicorn.conf.py` also calls `begin_shutdown`:
from then on new synthesis requests get 503 (a keep-alive connection may still bring one), and open streams
carry on for SHUTDOWN_GRACE_SECONDS, then end cleanly at their next chunk: an SSE stream without its `end`
event (EventSource and the farm's clients reconnect with their last event id, to another API process), a WAV
stream where it is. The jobs themselves run on in the workers.

**Listeners keep their audio.** Segment streams expire STREAM_TTL_SECONDS after the job's last write, which a
listener playing a long job in real time could outlast. While a reader is attached, this process restarts the
clock on the job's streams every third of the TTL, however slowly the reader consumes (a reader blocked in a
socket write runs no code of its own, so one thread here does it for every attached reader).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from api.errors import ShuttingDown
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.streams import keep_job_audio

log = logging.getLogger(__name__)


class ServerLeaving(Exception):
    """Raised in a stream's generator once the shutdown grace is over: end the response cleanly, now."""


class Lifecycle:
    def __init__(self) -> None:
        self._deadline: float | None = None
        self._attached: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    # --- shutdown ----------------------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        grace = get_settings().SHUTDOWN_GRACE_SECONDS
        self._deadline = time.monotonic() + grace
        log.info("shutting down: no new synthesis; open streams end within %s s", grace)

    @property
    def stopping(self) -> bool:
        return self._deadline is not None

    def streams_must_end(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def refuse_new_work(self) -> None:
        if self.stopping:
            raise ShuttingDown("this API process is shutting down; retry (another process or the restarted one)")

    # --- listeners' audio ----------------------------------------------------------------------------------
    def attach(self, job_id: str, segments_total: int) -> None:
        with self._lock:
            self._attached[(job_id, segments_total)] += 1
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="audio-keeper", daemon=True)
                self._keeper.start()

    def detach(self, job_id: str, segments_total: int) -> None:
        with self._lock:
            self._attached[(job_id, segments_total)] -= 1
            if self._attached[(job_id, segments_total)] <= 0:
                del self._attached[(job_id, segments_total)]

    def _keep(self) -> None:
        while True:
            ttl = get_settings().STREAM_TTL_SECONDS
            time.sleep(max(0.5, ttl / 3))
            with self._lock:
                jobs = list(self._attached)
            for job_id, total in jobs:
                try:
                    keep_job_audio(get_redis(), job_id, total, ttl)
                except Exception:  # Redis away: the next round tries again (the TTL leaves two more)
                    log.warning("could not keep the audio of job %s", job_id, exc_info=True)


lifecycle = Lifecycle()
