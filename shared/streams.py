"""The Redis stream protocol between workers (writers) and the API (readers).

Every segment (a piece of text, one Celery task) of a job has its own stream, `xtts:job:{id}:seg:{k}`, so that
segments can be synthesized in parallel while readers still deliver them in order. Entries:

* audio: an audio chunk: `type=audio`, `seq` (1, 2, ...), `pcm` (16-bit little-endian mono PCM at 24 kHz),
  `samples`.
  The entry id is `{seq}-1`: a retried segment that republishes a chunk is refused by Redis instead of
  duplicating it, and a reader's cursor is simply (segment, seq).
* end: `type=end` after the last audio entry; error: `type=error`, `reason`, if the segment failed for good.

A job-wide control stream, `xtts:job:{id}:ctl`, carries `type=cancelled` so that blocked readers wake at once;
a stop flag, `xtts:job:{id}:stop`, tells the job's running workers to stop (cancelled, or failed elsewhere).
Streams are capped (MAXLEN) and expire STREAM_TTL_SECONDS after their last write.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from shared.audio import SAMPLE_WIDTH
from shared.errors import InvalidCursor, JobCancelled, SynthesisFailed

AUDIO, END, ERROR, CANCELLED = b"audio", b"end", b"error", b"cancelled"

# redis-py's replies, as this binary-safe client (no decode_responses) returns them.
Fields = dict[bytes, bytes]
Entry = tuple[bytes, Fields]


def segment_key(job_id: str, index: int) -> str:
    return f"xtts:job:{job_id}:seg:{index}"


def control_key(job_id: str) -> str:
    return f"xtts:job:{job_id}:ctl"


def stop_flag_key(job_id: str) -> str:
    return f"xtts:job:{job_id}:stop"


EPOCH_KEY = "xtts:epoch"


def current_epoch(r: redis.Redis) -> str:
    """An id for this Redis dataset's lifetime: a Redis restarted without its data gets a new one."""
    pipe = r.pipeline(transaction=False)
    pipe.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)
    pipe.get(EPOCH_KEY)
    epoch: bytes = pipe.execute()[1]
    return epoch.decode()


@dataclass(frozen=True)
class Cursor:
    """Position in a job's audio: everything up to audio chunk `seq` of segment `segment` was delivered."""

    segment: int = 0
    seq: int = 0

    _FORMAT = re.compile(r"^(\d{1,9})-(\d{1,9})$")

    def __str__(self) -> str:
        return f"{self.segment}-{self.seq}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        match = cls._FORMAT.match(text)
        if not match:
            raise InvalidCursor(f"cursor {text!r} is not of the form '<segment>-<seq>' (for example '0-3')")
        return cls(int(match.group(1)), int(match.group(2)))


class StreamWriter:
    """Publishes one segment's entries; used by the worker that synthesizes the segment."""

    def __init__(self, r: redis.Redis, job_id: str, index: int, ttl: int, maxlen: int) -> None:
        self.r, self.key, self.ttl, self.maxlen = r, segment_key(job_id, index), ttl, maxlen

    def _last(self) -> tuple[int, bytes | None]:
        """(audio chunks already in the stream, type of its last entry)."""
        last = cast(list[Entry], self.r.xrevrange(self.key, count=1))
        if not last:
            return 0, None
        entry_id, fields = last[0]
        kind = fields.get(b"type")
        return (int(fields[b"seq"]) if kind == AUDIO else int(entry_id.split(b"-")[0]) - 1), kind

    def last_seq(self) -> int:
        """Audio chunks already in the stream (a retried segment skips those)."""
        return self._last()[0]

    def _add(self, seq: int, fields: dict[Any, Any]) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(self.key, fields, id=f"{seq}-1", maxlen=self.maxlen, approximate=True)
        pipe.expire(self.key, self.ttl)
        pipe.execute()

    def audio(self, seq: int, pcm: bytes) -> None:
        self._add(seq, {"type": AUDIO, "seq": seq, "pcm": pcm, "samples": len(pcm) // SAMPLE_WIDTH})

    def end(self, seq: int) -> None:
        self._add(seq, {"type": END, "seq": seq})

    def ensure_end(self) -> None:
        """Add the end entry unless the stream already ends (with an end or error entry)."""
        seq, kind = self._last()
        if kind in (None, AUDIO):
            self.end(seq + 1)

    def error(self, seq: int, reason: str) -> None:
        self._add(seq, {"type": ERROR, "seq": seq, "reason": reason.encode()[:2000]})


def publish_stop(r: redis.Redis, job_id: str, ttl: int) -> None:
    """Tell every worker running a segment of this job to stop (checked after each audio chunk)."""
    r.set(stop_flag_key(job_id), b"1", ex=ttl)


def publish_cancel(r: redis.Redis, job_id: str, ttl: int) -> None:
    """Stop the job's workers and wake its blocked readers."""
    pipe = r.pipeline(transaction=False)
    pipe.set(stop_flag_key(job_id), b"1", ex=ttl)
    pipe.xadd(control_key(job_id), {"type": CANCELLED}, maxlen=10, approximate=False)
    pipe.expire(control_key(job_id), ttl)
    pipe.execute()


def should_stop(r: redis.Redis, job_id: str) -> bool:
    return bool(r.exists(stop_flag_key(job_id)))


def all_segments_exist(r: redis.Redis, job_id: str, segments_total: int) -> bool:
    keys = [segment_key(job_id, i) for i in range(segments_total)]
    return not keys or r.exists(*keys) == len(keys)


def read_audio(
    r: redis.Redis,
    job_id: str,
    segments_total: int,
    cursor: Cursor | None = None,
    *,
    block_ms: int = 1000,
    on_idle: Callable[[], None] = lambda: None,
) -> Iterator[tuple[Cursor, bytes]]:
    """Yield (cursor, pcm) for every audio chunk after `cursor`, in order, blocking while workers produce.

    Raises SynthesisFailed / JobCancelled when the job fails or is cancelled. `on_idle` runs whenever a
    blocking read times out with nothing new, so the caller can check the job's SQL state and give up on
    a job that can no longer make progress (by raising).
    """
    cursor = cursor or Cursor()
    ctl_key, ctl_last = control_key(job_id), "0-0"
    for index in range(cursor.segment, segments_total):
        key = segment_key(job_id, index)
        last: bytes | str = f"{cursor.seq}-1" if index == cursor.segment and cursor.seq else "0-0"
        while True:
            reply = cast(
                list[tuple[bytes, list[Entry]]], r.xread({key: last, ctl_key: ctl_last}, block=block_ms, count=64)
            )
            if not reply:
                on_idle()
                continue
            finished = False
            for stream_name, entries in reply:
                if stream_name.decode() == ctl_key:
                    ctl_last = entries[-1][0].decode()
                    if any(fields.get(b"type") == CANCELLED for _, fields in entries):
                        raise JobCancelled(f"job {job_id} was cancelled")
                    continue
                for entry_id, fields in entries:
                    last = entry_id
                    kind = fields.get(b"type")
                    if kind == AUDIO:
                        yield Cursor(index, int(fields[b"seq"])), fields[b"pcm"]
                    elif kind == END:
                        finished = True
                        break
                    elif kind == ERROR:
                        raise SynthesisFailed(
                            f"synthesis of job {job_id} failed: " + fields.get(b"reason", b"unknown error").decode()
                        )
            if finished:
                break
