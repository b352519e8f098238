"""The Redis stream protocol between workers (writers) and the API (readers).

Every segment (a piece of text, one Celery task) of a job has its own stream, `xtts:job:{id}:seg:{k}`, so that
segments can be synthesized in parallel while readers still deliver them in order. Entries:

* audio: an audio chunk: `type=audio`, `seq` (1, 2, ...), `at` (the sample of the segment's audio it starts at),
  `pcm` (16-bit little-endian mono PCM at 24 kHz), `samples`, and what a new run needs to resume the segment
  exactly after it: `tokens` (the audio token ids generated since the previous chunk, 16-bit little-endian), `part`
  (which GPT pass of the segment),
  `part_end` (1 on a part's last chunk) and `last` (1 on the segment's last chunk: the segment's length is known
  with it, before its end entry, which character timing needs: shared/alignment.py), and `marks`: what the
  segment's attention says of the characters said by then (`chars:sample` pairs of the segment's audio, `-` where
  the timing is an estimate). The entry id is `{seq}-1`, so no chunk can be published twice, and each write
  checks that the stream ends with the entry before it (`StreamGap`: entries lost in a failover). A reader's cursor
  is (segment, seq, samples): where it is in the segment's audio (`Cursor`).
* end: `type=end` after the last audio entry; error: `type=error`, `reason`, if the segment failed for good.

Only the run that owns a segment writes to its stream: `{stream}:owner` holds the run's token, and every
write checks it in the same Lua call (`StreamWriter`), so a run that lost its lease cannot interleave with the
run that took the segment over.

A job-wide control stream, `xtts:job:{id}:ctl`, carries `type=cancelled` so that blocked readers wake at once;
a stop flag, `xtts:job:{id}:stop`, tells the job's running workers to stop (cancelled, or failed elsewhere).
A segment's stream is bounded by the segment itself (a few dozen chunks at most), so it is never trimmed: no
unread audio can be cut off. Streams expire STREAM_TTL_SECONDS after the job's last write; readers that are
still attached keep the job's streams alive (the API refreshes them while it delivers).
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import redis

from shared.alignment import Mark
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
    """Position in a job's audio: everything up to audio chunk `seq` of segment `segment` was delivered, which
    ends `samples` samples into the segment's audio.

    Written `<segment>-<seq>-<samples>`. A reader resumes after the position in samples, not after the chunk: the
    chunks a listener got may have been lost since (a Redis failover to a replica they had not reached) and made
    again by a new run, whose chunks need not end where the lost ones did; resuming at the sample, the listener gets
    every sample once. `<segment>-<seq>` (without samples, as cursors were first written) resumes after the chunk.
    """

    segment: int = 0
    seq: int = 0
    samples: int | None = None

    _FORMAT = re.compile(r"^(\d{1,9})-(\d{1,9})(?:-(\d{1,12}))?$")

    def __str__(self) -> str:
        if self.samples is None:
            return f"{self.segment}-{self.seq}"
        return f"{self.segment}-{self.seq}-{self.samples}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        match = cls._FORMAT.match(text)
        if not match:
            raise InvalidCursor(
                f"cursor {text!r} is not of the form '<segment>-<seq>-<samples>' (for example '0-3-30720') or "
                "'<segment>-<seq>'"
            )
        samples = match.group(3)
        return cls(int(match.group(1)), int(match.group(2)), None if samples is None else int(samples))


# XADD only while the caller still owns the segment (KEYS[2] holds the owning run's token): a run that lost its
# lease (its worker stalled, and another worker took the segment over) cannot write into the new run's audio.
_OWNED_XADD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return redis.error_reply('NOTOWNER') end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if (last and last[1] or '') ~= ARGV[4] then return redis.error_reply('GAP') end
local id = redis.call('XADD', KEYS[1], ARGV[2], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return id
"""


class NotOwner(Exception):
    """Another run took this segment over: the caller must stop writing (and stop synthesizing)."""


class StreamGap(Exception):
    """The stream does not end with the entry this run wrote before the one it writes now: Redis lost entries (a
    failover to a replica that had not received them yet; replication is asynchronous). The run must stop, and the
    segment resume from what the stream holds."""


def owner_key(job_id: str, index: int) -> str:
    return f"{segment_key(job_id, index)}:owner"


def encode_tokens(tokens: tuple[int, ...] | list[int]) -> bytes:
    """Audio token ids (0..1025) as 16-bit little-endian integers."""
    return struct.pack(f"<{len(tokens)}H", *tokens)


def decode_tokens(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}H", data))


def encode_marks(marks: Sequence[Mark] | None) -> bytes:
    """A chunk's attention marks (shared.alignment): `chars:sample` pairs, comma-separated; `-` where the segment's
    timing is an estimate (its attention does not read as an alignment)."""
    if marks is None:
        return b"-"
    return ",".join(f"{chars}:{sample}" for chars, sample in marks).encode()


def decode_marks(data: bytes | None) -> tuple[Mark, ...] | None:
    """The marks `encode_marks` wrote; None for `-`, for none, or for anything else (timing is then an estimate)."""
    if data is None or data == b"-":
        return None
    try:
        pairs = [item.split(b":") for item in data.split(b",") if item]
        return tuple((int(chars), int(sample)) for chars, sample in pairs)
    except ValueError:
        return None


def segment_marks(r: redis.Redis, key: str) -> tuple[Mark, ...] | None:
    """Every attention mark of a segment whose stream has ended, from its end entry alone (no audio is read); None
    where there are none, or Redis cannot say."""
    try:
        entries = cast(list[Entry], r.xrevrange(key, count=1))
    except redis.RedisError:
        return None
    if not entries or entries[0][1].get(b"type") != END:
        return None
    return decode_marks(entries[0][1].get(b"marks"))


def segment_pcm(r: redis.Redis, job_id: str, index: int, through: int | None = None) -> bytes:
    """The PCM of every audio chunk a segment's stream holds, in order (a finished segment's whole audio).
    `through`: the chunks must be 1 to `through`, or StreamGap (Redis lost the last ones in a failover)."""
    entries = cast(list[Entry], r.xrange(segment_key(job_id, index)))
    chunks = [fields for _id, fields in entries if fields.get(b"type") == AUDIO]
    if through is not None and [int(fields[b"seq"]) for fields in chunks] != list(range(1, through + 1)):
        raise StreamGap(f"{segment_key(job_id, index)} does not hold chunks 1 to {through}")
    return b"".join(fields[b"pcm"] for fields in chunks)


@dataclass(frozen=True)
class Delivered:
    """What a segment's stream already holds: everything a new run needs to resume it exactly.

    `tokens[p]`: the audio tokens of part p whose audio is in the stream (replayed, not sampled, on resume);
    `parts_ended`: the parts whose last chunk is in the stream; `last_seq`: the last audio chunk's number.
    """

    last_seq: int = 0
    samples: int = 0
    tokens: dict[int, list[int]] = field(default_factory=dict)
    parts_ended: frozenset[int] = frozenset()
    ended: bool = False  # an end or error entry closes the stream
    complete: bool = False  # the segment's last chunk is in it (its run may have died before the end entry)
    # The attention marks of its chunks, in order (None: none; chunks after a cursor lost have none).
    marks: tuple[Mark, ...] | None = None


def delivered(r: redis.Redis, key: str) -> Delivered:
    """What the segment stream `key` holds."""
    entries = cast(list[Entry], r.xrange(key))
    last_seq = samples = 0
    tokens: dict[int, list[int]] = {}
    ended_parts: set[int] = set()
    ended = complete = False
    marks: list[Mark] = []
    for _entry_id, fields in entries:
        kind = fields.get(b"type")
        if kind != AUDIO:
            ended = ended or kind in (END, ERROR)
            continue
        complete = complete or fields.get(b"last") == b"1"
        last_seq, samples = int(fields[b"seq"]), samples + int(fields[b"samples"])
        part = int(fields.get(b"part", b"0"))
        tokens.setdefault(part, []).extend(decode_tokens(fields.get(b"tokens", b"")))
        if fields.get(b"part_end") == b"1":
            ended_parts.add(part)
        marks += decode_marks(fields.get(b"marks")) or ()
    timed = tuple(marks) or None
    return Delivered(last_seq, samples, tokens, frozenset(ended_parts), ended, complete, timed)


class StreamWriter:
    """Publishes one segment's entries; used by the worker run that owns the segment (`claim`)."""

    def __init__(self, r: redis.Redis, job_id: str, index: int, run: str, ttl: int) -> None:
        self.r, self.key, self.owner_key, self.run = r, segment_key(job_id, index), owner_key(job_id, index), run
        self.ttl = ttl
        self._script = r.register_script(_OWNED_XADD)

    def claim(self) -> Delivered:
        """Become the segment's only writer, then read what earlier runs delivered (in that order: an earlier
        run's write that lands after the claim is refused, one that landed before is read)."""
        self.r.set(self.owner_key, self.run, ex=self.ttl)
        return self.delivered()

    def delivered(self) -> Delivered:
        return delivered(self.r, self.key)

    def _add(self, seq: int, fields: dict[str, bytes | str | int]) -> None:
        flat: list[bytes | str | int] = [item for pair in fields.items() for item in pair]
        try:
            previous = f"{seq - 1}-1" if seq > 1 else ""
            self._script(keys=[self.key, self.owner_key], args=[self.run, f"{seq}-1", self.ttl, previous, *flat])
        except redis.ResponseError as exc:
            if "NOTOWNER" in str(exc):
                raise NotOwner(f"{self.key} is now written by another run") from exc
            if "GAP" in str(exc):
                raise StreamGap(f"{self.key} does not end with entry {seq - 1}") from exc
            raise

    def audio(
        self,
        seq: int,
        pcm: bytes,
        tokens: tuple[int, ...] = (),
        part: int = 0,
        part_end: bool = False,
        last: bool = False,
        marks: Sequence[Mark] | None = None,
        start: int | None = None,
    ) -> None:
        """Chunk `seq`, which starts `start` samples into the segment's audio (the farm's runs always say; an entry
        without it is not checked by readers: `Rewritten`)."""
        where: dict[str, bytes | str | int] = {} if start is None else {"at": start}
        self._add(
            seq,
            {
                "type": AUDIO,
                "seq": seq,
                **where,
                "pcm": pcm,
                "samples": len(pcm) // SAMPLE_WIDTH,
                "tokens": encode_tokens(tokens),
                "part": part,
                "part_end": int(part_end),
                "last": int(last),
                "marks": encode_marks(marks),
            },
        )

    def end(self, seq: int, marks: Sequence[Mark] | None = None) -> None:
        """The stream's end; `marks`: all the segment's attention marks (what captions read without its audio)."""
        self._add(seq, {"type": END, "seq": seq, "marks": encode_marks(marks)})

    def error(self, seq: int, reason: str) -> None:
        self._add(seq, {"type": ERROR, "seq": seq, "reason": reason.encode()[:2000]})

    def ensure_end(self) -> None:
        """Close the stream unless an end or error entry already does (the segment is done in SQL)."""
        delivered = self.claim()
        if not delivered.ended:
            self.end(delivered.last_seq + 1)


def last_seq(r: redis.Redis, job_id: str, index: int) -> int:
    """The number of the last audio chunk a segment's stream holds (0: none)."""
    for _entry_id, fields in cast(list[Entry], r.xrevrange(segment_key(job_id, index))):
        if fields.get(b"type") == AUDIO:
            return int(fields[b"seq"])
    return 0


def keep_job_audio(r: redis.Redis, job_id: str, segments_total: int, ttl: int) -> None:
    """Restart the clock on every stream of a job: its audio stays `ttl` seconds after this call."""
    pipe = r.pipeline(transaction=False)
    for index in range(segments_total):
        pipe.expire(segment_key(job_id, index), ttl)
    pipe.execute()


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


def writer_key(job_id: str) -> str:
    return f"xtts:job:{job_id}:writer"


def keep_writer(r: redis.Redis, job_id: str, ttl: int) -> None:
    """A job whose text is open (a voice agent's context) has a writer, the API process that holds its socket, which
    renews this key while it lives: a job whose key has lapsed lost its writer (the process died) and is ended by
    the reaper rather than waiting for text that cannot come."""
    r.set(writer_key(job_id), b"1", ex=ttl)


def has_writer(r: redis.Redis, job_id: str) -> bool:
    return bool(r.exists(writer_key(job_id)))


def should_stop(r: redis.Redis, job_id: str) -> bool:
    return bool(r.exists(stop_flag_key(job_id)))


def all_segments_exist(r: redis.Redis, job_id: str, segments_total: int) -> bool:
    keys = [segment_key(job_id, i) for i in range(segments_total)]
    return not keys or r.exists(*keys) == len(keys)


@dataclass(frozen=True)
class Chunk:
    """One audio chunk as a reader gets it: where it is, its PCM, and whether it is its segment's last."""

    cursor: Cursor
    pcm: bytes
    last: bool = False
    marks: tuple[Mark, ...] | None = None  # the segment's attention's (shared.alignment), None where it has none


class _SegmentPosition:
    """A reader's way through one segment's audio entries: the samples before each, and what of it the listener
    already has (up to its cursor)."""

    def __init__(self, cursor: Cursor) -> None:
        self.heard_seq = cursor.seq if cursor.samples is None else 0
        self.heard_samples = cursor.samples or 0
        self.at = 0  # samples of the segment before the next entry
        self.heard_to = self.heard_samples  # where the listener is in the segment's audio

    def unheard(self, index: int, fields: Fields) -> Chunk | None:
        """The entry's chunk, less whatever the listener has of it; None if it has it all. Raises Rewritten when
        the entry does not start where the entries read before it end."""
        seq, pcm = int(fields[b"seq"]), fields[b"pcm"]
        if (written_at := fields.get(b"at")) is not None and int(written_at) != self.at:
            raise Rewritten
        start, self.at = self.at, self.at + len(pcm) // SAMPLE_WIDTH
        if seq <= self.heard_seq or self.at <= self.heard_samples:
            self.heard_to = max(self.heard_to, self.at)
            return None
        if start < self.heard_samples:
            pcm = pcm[(self.heard_samples - start) * SAMPLE_WIDTH :]
        self.heard_to = self.at
        marks = decode_marks(fields.get(b"marks"))
        return Chunk(Cursor(index, seq, self.at), pcm, fields.get(b"last") == b"1", marks)

    def again(self, index: int) -> _SegmentPosition:
        """A way through the segment's stream read again from its start, after what the listener has."""
        return _SegmentPosition(Cursor(index, 0, self.heard_to))


class Rewritten(Exception):
    """A segment's stream changed under its reader: Redis failed over and a new run wrote chunks again, after the
    ones the promoted replica held (a reader's command retried on the new master goes on from an id that now
    names other audio). The reader reads the segment again from its start, by samples."""


class StreamReads(Protocol):
    """What reading a job's chunks needs: XREAD, of a Redis client or of an API process's stream hub
    (api/fanout.py), which serves every waiting listener with one connection."""

    def xread(self, streams: Any, count: int | None = None, block: int | None = None) -> Any: ...


def read_chunks(
    r: StreamReads,
    job_id: str,
    segments_total: int,
    cursor: Cursor | None = None,
    *,
    block_ms: int = 1000,
    on_idle: Callable[[int], None] = lambda index: None,
) -> Iterator[Chunk]:
    """Yield every audio chunk after `cursor`, in order, blocking while workers produce.

    Raises SynthesisFailed / JobCancelled when the job fails or is cancelled. `on_idle(index)` runs whenever a
    blocking read of segment `index` times out with nothing new, so the caller can check the job's SQL state
    and give up on a job that can no longer make progress (by raising).
    """
    cursor = cursor or Cursor()
    ctl_key, ctl_last = control_key(job_id), "0-0"
    for index in range(cursor.segment, segments_total):
        key = segment_key(job_id, index)
        # The cursor's segment is read from its start, for the samples before each chunk: what the listener has is
        # skipped (by samples where the cursor says, else by chunk).
        after = _SegmentPosition(cursor if index == cursor.segment else Cursor(index))
        last: bytes | str = "0-0"
        while True:
            reply = cast(
                list[tuple[bytes, list[Entry]]], r.xread({key: last, ctl_key: ctl_last}, block=block_ms, count=64)
            )
            if not reply:
                on_idle(index)
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
                    try:
                        chunk = after.unheard(index, fields) if kind == AUDIO else None
                    except Rewritten:
                        after, last = after.again(index), "0-0"
                        break
                    if chunk is not None:
                        yield chunk
                    elif kind == END:
                        finished = True
                        break
                    elif kind == ERROR:
                        raise SynthesisFailed(
                            f"synthesis of job {job_id} failed: " + fields.get(b"reason", b"unknown error").decode()
                        )
            if finished:
                break
