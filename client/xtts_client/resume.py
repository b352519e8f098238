"""Following a job's Server-Sent Events across dropped connections: reconnect from the last event id (the
cursor) and go on, so that the audio read is exactly what one unbroken read would give."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from xtts_client.errors import FarmError, StreamBroken
from xtts_client.sse import Event, SSEParser

# Answers worth retrying: the farm is busy (429) or briefly unavailable, e.g. an API process restarting (503).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class Dropped(Exception):
    """The connection broke off (or could not be made); the reason is for humans."""


@dataclass(frozen=True)
class AudioEvent:
    cursor: str
    segment: int
    seq: int
    pcm: bytes

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


@dataclass(frozen=True)
class EndEvent:
    state: str


@dataclass(frozen=True)
class RetryPolicy:
    """Consecutive failed attempts allowed (the count starts again with every event received), and the waits
    between them: `first_wait` doubling up to `max_wait` (or the farm's Retry-After, within `max_wait`)."""

    attempts: int = 10
    first_wait: float = 0.25
    max_wait: float = 5.0

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        return min(self.first_wait * 2.0 ** (failures - 1), self.max_wait)


OnReconnect = Callable[[str | None, int, str], None]  # (cursor, attempt, reason)


def cursor_key(cursor: str | None) -> tuple[int, int]:
    """Where an event id is in the job's audio: (segment, samples) for `<segment>-<seq>-<samples>`, or (segment,
    seq) for the `<segment>-<seq>` of older farms. By samples, not chunk: a chunk made again after a Redis failover
    may carry a lower number than one before it, yet go on from it."""
    if not cursor:
        return (0, 0)
    parts = [int(part) for part in cursor.split("-")]
    return (parts[0], parts[-1])


def _same_form(a: str, b: str) -> bool:
    """Both ids by samples, or both by chunk (a farm upgraded mid-stream answers the new form: not compared)."""
    return a.count("-") == b.count("-")


def decode(event: Event) -> AudioEvent | EndEvent | None:
    """An `audio` or `end` event; an `error` event raises its FarmError; others are ignored."""
    if event.event not in ("audio", "end", "error"):
        return None
    data = json.loads(event.data) if event.data else {}
    if event.event == "error":
        raise FarmError.from_body(data, int((data.get("error") or {}).get("status") or 500))
    if event.event == "end":
        return EndEvent(state=str(data.get("state", "succeeded")))
    if event.id is None:
        raise ValueError("an audio event without an id: the farm's stream is not resumable")
    return AudioEvent(
        cursor=event.id,
        segment=int(data["segment"]),
        seq=int(data["seq"]),
        pcm=base64.b64decode(data["pcm_s16le_base64"]),
    )


def follow(
    open_stream: Callable[[str | None], Iterable[bytes]],
    job_id: str,
    cursor: str | None = None,
    *,
    policy: RetryPolicy | None = None,
    on_reconnect: OnReconnect | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[AudioEvent | EndEvent]:
    """Audio events after `cursor` in order, then the end event. `open_stream(cursor)` opens the stream from a
    cursor and gives its body's bytes; it raises Dropped when the connection fails, FarmError when the farm
    answers an error. A drop, a retryable answer or a stream that stops before its end event is retried from
    the last cursor; anything else (an `error` event, a 404, a 410) is raised."""
    policy = policy or RetryPolicy()
    failures = 0
    while True:
        try:
            for event in _events(open_stream(cursor)):
                if isinstance(event, EndEvent):
                    yield event
                    return
                if (
                    cursor is not None
                    and _same_form(event.cursor, cursor)
                    and cursor_key(event.cursor) <= cursor_key(cursor)
                ):
                    continue  # never twice, even from a farm that repeated itself
                cursor, failures = event.cursor, 0
                yield event
            reason, retry_after = "the stream ended before its end event", None
        except Dropped as exc:
            reason, retry_after = str(exc), None
        except FarmError as exc:
            if exc.status not in RETRYABLE_STATUSES:
                raise
            reason, retry_after = f"{exc.message} ({exc.code})", exc.retry_after
        failures += 1
        if failures > policy.attempts:
            raise StreamBroken(job_id, cursor, reason)
        if on_reconnect is not None:
            on_reconnect(cursor, failures, reason)
        sleep(policy.wait(failures, retry_after))


def _events(chunks: Iterable[bytes]) -> Iterator[AudioEvent | EndEvent]:
    parser = SSEParser()
    for chunk in chunks:
        for event in parser.feed(chunk):
            decoded = decode(event)
            if decoded is not None:
                yield decoded
