"""What every request leaves for the operator: its count in the farm's metrics, and its ids on its log lines.

* After each request, one HINCRBY counts it by endpoint, method and status code in Redis (shared/metrics.py), where
  `GET /metrics` on any API process reads the counts of all of them. Counting never fails a request.
* Each reader of a job's audio keeps the playback clock of a real-time listener (shared/playback.py) over the
  chunks it sends, and counts in Redis the silence a listener heard when one came late (`PlaybackMeter`).
* Its job id (a path's `job_id` or `session_id`, or the job it creates: api/submission.py) and its tenant are
  bound to the log context, so every line about it names them, gunicorn's access line included: the context is
  cleared when the next request starts and when the response is closed, which gunicorn does after logging it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, g, request

from shared import jobs, logs, metrics
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH
from shared.playback import PlaybackClock
from shared.redis_client import get_redis

log = logging.getLogger(__name__)

JOB_PATH_PARAMETERS = ("job_id", "session_id")
# Labels come from a bounded set: a client inventing methods (or paths: those are "unmatched") adds no series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _ClosingBody:
    """The response body, clearing the log context when the server closes it (after its access line)."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            logs.clear()


class LogContext:
    """WSGI middleware: each request starts with an empty log context and leaves none behind on its thread."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        logs.clear()
        return _ClosingBody(self.app(environ, start_response))


class PlaybackMeter:
    """What the listener of one reader of a job's audio hears, measured where the API reads each chunk from Redis:
    a chunk read after the playback clock ran out is a deadline miss, and the silence it ended counts as stall.
    (A client that reads slower than real time delays the reads too; a player reads ahead of real time.)"""

    def __init__(self, job_id: str, priority: Callable[[], str] | None = None) -> None:
        """`priority`: how to learn the job's class (its label), if not from SQL at the first record."""
        self.job_id = job_id
        self.clock = PlaybackClock()
        self._priority: str | None = None
        self._ask_priority = priority or (lambda: jobs.priority_of(job_id).value)

    def sent(self, pcm: bytes) -> None:
        late = self.clock.arrive(time.monotonic(), len(pcm) / SAMPLE_WIDTH / SAMPLE_RATE)
        if late > 0:
            self._record(lambda r, priority: metrics.record_stall(r, priority, late))

    def close(self) -> None:
        """The reader stopped: counts its stream once it has sent any audio."""
        if self.clock.first_audio_at is not None:
            clock = self.clock
            self._record(lambda r, priority: metrics.record_stream(r, priority, clock.audio_s, clock.continuous))

    def _record(self, write: Any) -> None:
        try:  # like a request's count: measuring never fails a stream
            if self._priority is None:
                self._priority = self._ask_priority()
            write(get_redis(), self._priority)
        except Exception:
            log.debug("could not record job %s's playback in Redis", self.job_id, exc_info=True)


def _bind_ids() -> None:
    args = request.view_args or {}
    job_id = next((str(args[p]) for p in JOB_PATH_PARAMETERS if args.get(p)), None)
    caller = g.get("caller")
    logs.bind(job_id=job_id, tenant=caller.tenant if caller is not None else None)


def _count(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"  # 404s of paths no route matches: one label for all of them
    try:
        method = request.method if request.method in METHODS else "other"
        metrics.count_request(get_redis(), endpoint, method, response.status_code)
    except Exception:  # Redis away: the request is answered all the same (the error shows on /health)
        log.debug("could not count the request in Redis", exc_info=True)
    log.debug("%s %s answered %d (%s)", request.method, request.path, response.status_code, endpoint)
    return response


def register(app: Flask) -> None:
    """Call after `api.auth.register`: the ids are bound once the caller (its tenant) is known."""
    app.before_request(_bind_ids)
    app.after_request(_count)
    app.wsgi_app = LogContext(app.wsgi_app)  # type: ignore[method-assign]
