"""MAX_CONCURRENT_REQUESTS: how many synthesis responses one API process serves at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from shared.errors import TooManyRequests


class ConcurrencyLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise TooManyRequests(
                f"this API process already serves MAX_CONCURRENT_REQUESTS={self.limit} synthesis requests; "
                "retry shortly"
            )

    def release(self) -> None:
        self._slots.release()

    def hold_while(self, body: Iterator[bytes]) -> Iterator[bytes]:
        """Release the slot acquired for a streamed response when the stream ends or the client leaves."""
        try:
            yield from body
        finally:
            self.release()
