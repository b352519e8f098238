"""MAX_CONCURRENT_REQUESTS: how many synthesis responses one API process serves at once, and the line before it.

A request over the limit waits its turn (first come, first served) for at most REQUEST_QUEUE_TIMEOUT_SECONDS, then
gets a 429 with Retry-After. At most MAX_CONCURRENT_REQUESTS requests wait at once (more get the 429 at once), so
waiting requests never take the threads that the other endpoints need (gunicorn.conf.py sizes the pool for both).

A slot is released by `Slot.release`, which is idempotent; for a streamed response it runs from the response's
`close()` (`Response.call_on_close`), which the WSGI server calls however the response ends, HEAD included. It
used to run in the body generator's `finally`, which never runs when the body is never iterated (HEAD): ten HEAD
requests took every slot for good.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from shared.errors import TooManyRequests

# What a 429 of this limit tells the client: synthesis responses last seconds to minutes.
RETRY_AFTER_SECONDS = 5


class Slot:
    """One held place under the limit; `release` may be called any number of times, it frees the place once."""

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit: ConcurrencyLimit | None = limit
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            limit, self._limit = self._limit, None
        if limit is not None:
            limit._free()


@dataclass(frozen=True)
class LimitState:
    limit: int
    in_use: int
    waiting: int


class ConcurrencyLimit:
    def __init__(self, limit: int, wait_seconds: float, max_waiting: int | None = None) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.max_waiting = limit if max_waiting is None else max_waiting
        self._cond = threading.Condition()
        self._in_use = 0
        self._line: deque[int] = deque()  # tickets of the waiting requests, in arrival order
        self._next_ticket = 0

    def acquire(self) -> Slot:
        """A slot now, or when this request's turn comes within `wait_seconds`; TooManyRequests otherwise."""
        deadline = time.monotonic() + self.wait_seconds
        with self._cond:
            if self._in_use < self.limit and not self._line:
                self._in_use += 1
                return Slot(self)
            if len(self._line) >= self.max_waiting:
                raise self._refusal(f"and {len(self._line)} more are waiting")
            ticket = self._next_ticket
            self._next_ticket += 1
            self._line.append(ticket)
            try:
                while not (self._line[0] == ticket and self._in_use < self.limit):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._refusal(f"and this request waited {self.wait_seconds:g} s for its turn")
                    self._cond.wait(left)
            except BaseException:
                self._line.remove(ticket)
                self._cond.notify_all()  # the next in line may be first now
                raise
            self._line.popleft()
            self._in_use += 1
            self._cond.notify_all()  # more slots may be free for the next in line
            return Slot(self)

    def _refusal(self, why: str) -> TooManyRequests:
        return TooManyRequests(
            f"this API process already serves MAX_CONCURRENT_REQUESTS={self.limit} synthesis requests {why}; "
            f"retry in {RETRY_AFTER_SECONDS} s",
            retry_after=RETRY_AFTER_SECONDS,
        )

    def _free(self) -> None:
        with self._cond:
            self._in_use -= 1
            self._cond.notify_all()

    def state(self) -> LimitState:
        with self._cond:
            return LimitState(self.limit, self._in_use, len(self._line))
