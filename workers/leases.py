"""The leases of the segments a worker process runs, and the heartbeat that keeps them and the worker's registry
entry alive.

A run holds its segment's lease in SQL (`shared.jobs.start_segment`) until it finishes, fails or hands it back.
The heartbeat renews the leases of every run the process holds; a lease it can no longer renew was taken over by
another run (this one stalled past its expiry and the reaper gave the segment away), and its run stops at its
next chunk (`LeaseBook.lost`, checked by `workers.synthesis`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared import jobs
from shared.settings import Settings
from workers.loops import quietly


class LeaseBook:
    """The runs whose leases this worker renews, and those that lost theirs (another run took over).

    `renew_leases(runs, seconds)` extends the leases in SQL and returns the runs that still hold theirs
    (`shared.jobs.renew_leases`; a unit test may give its own)."""

    def __init__(self, renew_leases: Callable[[list[str], float], set[str]] = jobs.renew_leases) -> None:
        self._renew_leases = renew_leases
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, run: str) -> None:
        with self._lock:
            self._held.add(run)

    def release(self, run: str) -> None:
        with self._lock:
            self._held.discard(run)
            self._lost.discard(run)

    def lost(self, run: str) -> bool:
        with self._lock:
            return run in self._lost

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held - self._lost)

    def renew(self, lease_seconds: float) -> None:
        runs = self.held()
        still = self._renew_leases(runs, lease_seconds)  # outside the lock: runs start and end meanwhile
        with self._lock:
            # A run released during the renewal finished (its lease is gone from SQL for that reason): it did not
            # lose its segment, and marking it now would keep it in `_lost` forever.
            self._lost |= (set(runs) - still) & self._held


class Heartbeat:
    """The heartbeat thread's work: renew the held leases every SEGMENT_LEASE_SECONDS / 3, and publish the worker's
    registry entry every WORKER_HEARTBEAT_SECONDS, or at once when what it shows has changed (`changed`)."""

    def __init__(self, leases: LeaseBook, publish: Callable[[], None], settings: Settings) -> None:
        self.leases = leases
        self._publish = publish
        self._lease_seconds = settings.SEGMENT_LEASE_SECONDS
        self._renew_every = settings.SEGMENT_LEASE_SECONDS / 3
        self._publish_every = settings.WORKER_HEARTBEAT_SECONDS
        self._changed = threading.Event()

    def changed(self) -> None:
        """What the registry entry shows has changed: the heartbeat thread publishes it at once (off the caller's
        thread, so a task's hot path never waits for Redis)."""
        self._changed.set()

    def run(self, stop: threading.Event) -> None:
        last_publish = last_renew = 0.0
        while not stop.is_set():
            self._changed.wait(min(self._renew_every, self._publish_every))
            changed = self._changed.is_set()
            self._changed.clear()
            now = time.monotonic()
            if now - last_renew >= self._renew_every:
                quietly(lambda: self.leases.renew(self._lease_seconds), "lease renewal")
                last_renew = now
            if changed or now - last_publish >= self._publish_every:
                self._publish()
                last_publish = now
