"""One Redis reader per API process for every listener that waits for audio.

A listener of a running job spends most of its life waiting for the next chunk. Each used to wait in a blocking
XREAD of its own, holding a pooled Redis connection (and, under a threaded server, a thread) for as long as it
listened: a few hundred listeners exhausted the pool. Here a listener first reads what is already there (a
non-blocking XREAD: a pooled connection for a moment), and only when it has everything does it wait, with a
`_Waiter`, for the hub: one connection whose blocking XREAD covers every waiting listener's streams at once, each
from the oldest id its waiters have, and hands each waiter the entries after its own id. The hub goes on reading a
stream for a while after answering its waiters (RECENT_SECONDS): a listener coming back for the next chunk, as
listeners of a running job do, finds its stream covered and waits at once, with no read of its own and no wake.

A waiter for a stream the hub's XREAD in flight does not cover (from an id no later than the waiter's) wakes the
hub: an entry on the process's own wake stream (`xtts:fanout:{token}`) ends that XREAD at once, and the next one
covers the newcomer. A wake already sent and not yet seen is not sent again, so a burst of newcomers costs one.

The hub is `xread` to `shared.streams.read_chunks`, as a Redis client is: the reading code is the same either way.
Under gunicorn's gevent worker the hub's thread and the waiters are greenlets; under a threaded server, threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import redis

from shared.redis_client import get_redis, new_client
from shared.settings import get_settings
from shared.streams import Entry

log = logging.getLogger(__name__)

WAKE_PREFIX = "xtts:fanout:"
# How long one XREAD of the hub blocks when nothing arrives: a bound on nothing (newcomers wake it), only how often
# an idle hub asks again; well within redis-py's socket timeout (5 s), which would fail the read.
HUB_BLOCK_MS = 2000
# A wake stream outlives its process by this much at most.
WAKE_TTL_SECONDS = 3600
# How long the hub goes on reading a stream after answering its waiters: a listener that has just been handed a
# chunk comes back for the next within milliseconds, and finds its stream covered (no read of its own, no wake).
RECENT_SECONDS = 2.0
# The hub's pause between an XREAD's answer and its next: up to this much added to a chunk's way to a listener.
GATHER_SECONDS = 0.005
# After a failed XREAD (Redis restarting, a failover), the hub waits this long before its next.
RETRY_PAUSE_SECONDS = 0.1

Reply = list[list[Any]]  # as redis-py answers XREAD: [stream name, [(id, fields), ...]] a stream


def _id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id as numbers, for comparing ('0-0', b'1700000000000-3')."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class _Waiter:
    """One listener's wait: the streams it reads, each after its own id, and what the hub handed it."""

    def __init__(self, streams: Mapping[str, bytes | str], count: int | None) -> None:
        self.after = {key: _id(last) for key, last in streams.items()}
        self.count = count
        self.done = threading.Event()
        self.reply: Reply = []
        self.error: BaseException | None = None

    def offer(self, key: str, entries: list[Entry]) -> None:
        """Keep the entries of `key` that come after this waiter's id (at most `count` of them)."""
        newer = [entry for entry in entries if _id(entry[0]) > self.after[key]]
        if newer:
            self.reply.append([key.encode(), newer[: self.count] if self.count else newer])


class StreamHub:
    """The process's reader: `xread` as redis-py's, one blocking XREAD for every waiting listener."""

    def __init__(self, client: redis.Redis, shared: Callable[[], redis.Redis] = get_redis) -> None:
        """`client`: the hub's own, for its blocking XREAD; `shared`: the process's pool, for the listeners' quick
        reads and the wakes."""
        self._client, self._shared = client, shared
        self._closed = False
        self._wake_key = f"{WAKE_PREFIX}{uuid.uuid4().hex}"
        self._wake_last = "0-0"
        self._lock = threading.Lock()
        self._waiters: dict[str, dict[int, _Waiter]] = {}  # by stream, the waiters reading it (by id())
        self._in_flight: dict[str, tuple[int, int]] = {}  # what the XREAD now blocking covers, from which id
        # Streams whose waiters the hub answered lately: the newest entry seen, and until when it keeps reading them
        self._recent: dict[str, tuple[tuple[int, int], float]] = {}
        self._next_expiry = 0.0
        self._oldest: dict[str, tuple[int, int]] = {}  # by stream, the oldest id its waiters have
        self._wake_sent = False
        self._thread = threading.Thread(target=self._run, name="stream-hub", daemon=True)
        self._thread.start()

    @property
    def serving(self) -> bool:
        return not self._closed and self._thread.is_alive()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len({key for waiters in self._waiters.values() for key in waiters})

    def xread(self, streams: Mapping[str, bytes | str], count: int | None = None, block: int | None = None) -> Reply:
        """What a Redis client's XREAD answers: the entries after each stream's id, waiting up to `block` ms for
        one when there are none yet (an empty list when none came)."""
        if not self.serving:  # closed, or its thread died: each listener reads for itself
            direct: Reply = self._shared().xread(dict(streams), count=count, block=block)  # type: ignore[arg-type,assignment]
            return direct
        waiter = _Waiter(streams, count)
        if not (block and self._add(waiter, only_if_covered=True)):
            reply: Reply = self._shared().xread(dict(streams), count=count)  # type: ignore[arg-type,assignment]
            if reply or not block:
                return reply
            self._add(waiter)
        if not waiter.done.wait(block / 1000):
            with self._lock:
                if not waiter.done.is_set():  # the hub may have answered between the timeout and the lock
                    self._remove(waiter)
                    return []
        if waiter.error is not None:
            raise waiter.error
        return waiter.reply

    # --- the listeners' side ---------------------------------------------------------------------------------
    def _add(self, waiter: _Waiter, only_if_covered: bool = False) -> bool:
        """Make `waiter` wait for the hub, waking the hub if its XREAD does not cover the waiter's streams (from
        ids no later than the waiter's). With `only_if_covered`, only when it does: then the XREAD returns anything
        after the waiter's ids, and the waiter needs no read of its own first. Whether the waiter was added."""
        with self._lock:
            covered = all(
                key in self._in_flight and self._in_flight[key] <= after for key, after in waiter.after.items()
            )
            if only_if_covered and not covered:
                return False
            for key, after in waiter.after.items():
                self._waiters.setdefault(key, {})[id(waiter)] = waiter
                self._oldest[key] = min(after, self._oldest.get(key, after))
            wake = not covered and not self._wake_sent
            if wake:
                self._wake_sent = True
        if wake:
            self._wake()
        return True

    def _wake(self) -> None:
        try:
            pipe = self._shared().pipeline(transaction=False)
            pipe.xadd(self._wake_key, {b"w": b"1"}, maxlen=1)
            pipe.expire(self._wake_key, WAKE_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError:
            # The hub's own XREAD fails the same way and retries, covering the newcomer then.
            log.warning("could not wake the stream hub; it covers new listeners at its next read", exc_info=True)

    def _remove(self, waiter: _Waiter) -> None:
        """With the lock held: the waiter was answered, or its wait ended empty. Either way its listener is likely
        back within moments, for the same streams: the hub reads them on for RECENT_SECONDS, from the newest entry
        it saw of each (or from where its XREAD read them)."""
        until = time.monotonic() + RECENT_SECONDS
        for key, after in waiter.after.items():
            waiters = self._waiters.get(key, {})
            waiters.pop(id(waiter), None)
            if not waiters:
                self._waiters.pop(key, None)
                self._oldest.pop(key, None)
            elif self._oldest.get(key) == after:  # it may have been the oldest: look again (at this stream only)
                self._oldest[key] = min(w.after[key] for w in waiters.values())
            if key in self._recent:
                self._recent[key] = (self._recent[key][0], until)
            elif key in self._in_flight:
                self._recent[key] = (self._in_flight[key], until)

    # --- the hub's side -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the hub (its waiters get nothing more); a process's hub lives as long as the process."""
        self._closed = True
        self._fail_all(redis.ConnectionError("the stream hub is closed"))
        self._client.connection_pool.disconnect()  # its XREAD in flight fails at once, and the hub's thread ends

    def _run(self) -> None:
        try:
            self._serve()
        finally:  # closed (or broken): nothing is covered any more, and no waiter is left waiting for this thread
            self._closed = True
            self._fail_all(redis.ConnectionError("the stream hub stopped"))

    def _serve(self) -> None:
        while not self._closed:
            with self._lock:
                self._in_flight = self._streams_to_read()
                self._wake_sent = False
                streams: dict[Any, Any] = {key: f"{ms}-{seq}" for key, (ms, seq) in self._in_flight.items()}
            streams[self._wake_key] = self._wake_last
            try:
                reply: Reply = self._client.xread(streams, block=HUB_BLOCK_MS, count=64)  # type: ignore[assignment]
            except Exception as error:  # Redis failing, or anything else: the waiters get it, the hub goes on
                if self._closed:
                    return
                if not isinstance(error, redis.RedisError):
                    log.exception("the stream hub's read failed")
                self._fail_all(error)
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            self._hand_out(reply or [])
            # A moment for the listeners just answered to come back, and for more audio to arrive: under load one
            # XREAD then serves many arrivals (each costs as much as the streams it covers).
            time.sleep(GATHER_SECONDS)

    def _streams_to_read(self) -> dict[str, tuple[int, int]]:
        """With the lock held: each waited stream from the oldest id its waiters have, and each recently answered
        stream from the newest entry the hub saw (its listeners come back for the next one)."""
        now = time.monotonic()
        if now >= self._next_expiry:
            self._recent = {key: seen for key, seen in self._recent.items() if seen[1] > now}
            self._next_expiry = now + RECENT_SECONDS / 4
        streams = {key: newest for key, (newest, _) in self._recent.items()}
        for key, oldest in self._oldest.items():
            streams[key] = min(oldest, streams.get(key, oldest))
        return streams

    def _hand_out(self, reply: Reply) -> None:
        answered: dict[int, _Waiter] = {}
        with self._lock:
            for name, entries in reply:
                key = name.decode()
                if key == self._wake_key:
                    self._wake_last = entries[-1][0].decode()
                    continue
                waiters = self._waiters.get(key, {})
                for waiter in waiters.values():
                    waiter.offer(key, entries)
                    if waiter.reply:
                        answered[id(waiter)] = waiter
                if waiters or key in self._recent:  # read on from the newest entry (`_remove` keeps it longer)
                    kept_until = self._recent[key][1] if key in self._recent else 0.0
                    self._recent[key] = (_id(entries[-1][0]), kept_until)
            for waiter in answered.values():
                self._remove(waiter)
                waiter.done.set()  # under the lock: a wait timing out now sees it answered

    def _fail_all(self, error: BaseException) -> None:
        """Every waiter gets the hub's Redis error, as its own blocking XREAD would have raised it."""
        with self._lock:
            waiters = {key: w for ws in self._waiters.values() for key, w in ws.items()}.values()
            self._waiters.clear()
            self._oldest.clear()
            self._in_flight = {}
            for waiter in waiters:
                waiter.error = error
                waiter.done.set()


_hub: tuple[tuple[Any, ...], StreamHub] | None = None
_hub_lock = threading.Lock()


def stream_hub() -> StreamHub:
    """This process's hub, started at its first listener (a forked process, or one whose Redis settings changed,
    starts its own)."""
    global _hub  # noqa: PLW0603 - one hub per process
    settings = get_settings()
    identity = (os.getpid(), settings.REDIS_URL, settings.REDIS_SENTINELS, settings.REDIS_SENTINEL_MASTER)
    with _hub_lock:
        if _hub is None or _hub[0] != identity:
            if _hub is not None and _hub[0][0] == os.getpid():
                _hub[1].close()
            _hub = (identity, StreamHub(new_client(settings)))
        return _hub[1]
