"""Many listeners on one API process, fed by fast fake producers: what the benchmark's `fanout` section and
tests/test_fanout.py measure.

`FakeProducer` writes a job's audio as a worker does (shared.streams.StreamWriter: owned entries, each chunk with
its start sample, then the end entry), faster than any model, and notes when it wrote each chunk. The listeners are
asyncio clients (aiohttp) in this process: SSE listeners of jobs created with POST /jobs (several a job), or
POST /tts_stream responses whose jobs the producer starts as soon as their headers arrive. A chunk's delivery delay
is when a listener received it less when the producer had written it: what the API adds between a worker and a
listener (the producer's own Redis write is inside it, the client's parsing too).

The API process's memory (RSS) is read from /proc before the listeners connect and while all of them are held; its
CPU time over the run, likewise. Nothing here runs a worker: the farm needs none (jobs stay queued in SQL).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import redis

from shared import registry
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH
from shared.streams import StreamWriter
from tools.localfarm import DEV_SPEAKER

WAV_HEADER_BYTES = 44
CHUNK_SECONDS = 0.5  # of audio a chunk: a worker's first chunk is shorter, its later ones about this


def chunk_pcm(job_id: str, seq: int) -> bytes:
    """Chunk `seq` of a job: a tone of its own, so that a listener given another job's or chunk's audio is caught."""
    samples = int(SAMPLE_RATE * CHUNK_SECONDS)
    t = np.arange(samples) / SAMPLE_RATE
    pitch = 200 + (int(job_id.replace("-", "")[:6], 16) % 400) + 10 * seq
    return (np.sin(2 * math.pi * pitch * t) * 8000).astype("<i2").tobytes()


def job_pcm(job_id: str, chunks: int) -> bytes:
    return b"".join(chunk_pcm(job_id, seq) for seq in range(1, chunks + 1))


class FakeProducer:
    """A worker that makes no sound of its own: writes each started job's `chunks` chunks (one segment), the first
    at once and the others `interval` seconds apart, from a thread of its own; `written[(job, seq)]` is when. It is
    in the worker registry while it lives, with the dev model's languages and `speakers`, so that the API admits
    requests for them (the API checks a built-in speaker against the live workers')."""

    NAME = "fake-producer"

    def __init__(
        self, redis_url: str, chunks: int, interval: float, speakers: tuple[str, ...] = (DEV_SPEAKER,), ttl: int = 600
    ) -> None:
        self._r = redis.Redis.from_url(redis_url)
        info = {"name": self.NAME, "node": self.NAME, "languages": ["en"], "speakers": list(speakers), "current": []}
        registry.publish(self._r, self.NAME, info, ttl)
        self.chunks, self.interval, self.ttl = chunks, interval, ttl
        self.written: dict[tuple[str, int], float] = {}
        self.failures: list[str] = []
        self._due: list[tuple[float, str, int]] = []
        self._writers: dict[str, StreamWriter] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="fake-producer", daemon=True)
        self._thread.start()

    def start(self, job_id: str, at: float | None = None) -> None:
        """Write the job's chunks, from `at` (time.perf_counter(); now if None)."""
        with self._cond:
            heapq.heappush(self._due, (time.perf_counter() if at is None else at, job_id, 1))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(10)
        registry.remove(self._r, self.NAME)
        self._r.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > time.perf_counter()):
                    self._cond.wait(self._due[0][0] - time.perf_counter() if self._due else None)
                if self._stopped:
                    return
                _, job_id, seq = heapq.heappop(self._due)
            try:
                self._write(job_id, seq)
            except redis.RedisError as exc:
                self.failures.append(f"{job_id} chunk {seq}: {exc}")
                continue
            if seq < self.chunks:
                with self._cond:
                    heapq.heappush(self._due, (time.perf_counter() + self.interval, job_id, seq + 1))

    def _write(self, job_id: str, seq: int) -> None:
        if seq == 1:
            self._writers[job_id] = writer = StreamWriter(self._r, job_id, 0, f"fake-{uuid.uuid4().hex}", self.ttl)
            writer.claim()
        writer = self._writers[job_id]
        pcm = chunk_pcm(job_id, seq)
        start = (seq - 1) * len(pcm) // SAMPLE_WIDTH
        began = time.perf_counter()  # before the write: a listener may have it before the write returns here
        writer.audio(seq, pcm, last=seq == self.chunks, start=start)
        self.written[(job_id, seq)] = began
        if seq == self.chunks:
            writer.end(seq + 1)
            del self._writers[job_id]


@dataclass
class Heard:
    """One listener's response: its status, its audio, and when each chunk arrived."""

    job_id: str = ""
    status: int = 0
    pcm: bytearray = field(default_factory=bytearray)
    arrived: list[tuple[int, float]] = field(default_factory=list)  # (seq, perf_counter)
    ended: bool = False
    error: str = ""


@dataclass
class FanoutResult:
    listeners: int
    complete: int  # listeners that got all their job's audio, exactly
    refused: dict[int, int]  # HTTP status -> count, for those not answered 200
    errors: list[str]
    held: int  # the most listeners connected at once
    first_audio_ms: list[float]  # per listener: its first chunk's arrival less its writing
    chunk_ms: list[float]  # every chunk's arrival less its writing
    rss_before_kb: int
    rss_held_kb: int
    cpu_seconds: float
    wall_seconds: float

    def row(self, name: str) -> dict[str, Any]:
        """The benchmark's table row and JSON."""
        return {
            "case": name,
            "listeners": self.listeners,
            "complete": self.complete,
            "refused": sum(self.refused.values()),
            "held at once": self.held,
            "first audio +ms p50": _pct(self.first_audio_ms, 50),
            "first audio +ms p99": _pct(self.first_audio_ms, 99),
            "chunk +ms p50": _pct(self.chunk_ms, 50),
            "chunk +ms p99": _pct(self.chunk_ms, 99),
            "KiB per listener": round((self.rss_held_kb - self.rss_before_kb) / max(1, self.listeners), 1),
            "API RSS MiB": round(self.rss_held_kb / 1024, 1),
            "API CPU %": round(100 * self.cpu_seconds / self.wall_seconds, 1) if self.wall_seconds else None,
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)], 1)


# --- the API process ------------------------------------------------------------------------------------------
def api_worker_pid(master_pid: int) -> int:
    """The gunicorn worker (the process that serves) of a one-process API whose master is `master_pid`."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"the API master {master_pid} has {len(children)} worker processes, not 1")
    return int(children[0])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_connections_of(pid: int, r: redis.Redis) -> list[dict[str, Any]]:
    """CLIENT LIST's entries of the process `pid`'s connections to `r`'s server (matched by their ports)."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] in sockets:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return [client for client in r.client_list() if int(client["addr"].rsplit(":", 1)[1]) in ports]


# --- the listeners ----------------------------------------------------------------------------------------------
class _Crowd:
    """How many listeners are connected now, and the most at once; `all_connected` is set when `expected` are."""

    def __init__(self, expected: int) -> None:
        self.now = self.most = self.answered = 0
        self.expected = expected
        self.all_connected = asyncio.Event()

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1

    def count_answer(self) -> None:
        self.answered += 1
        if self.answered >= self.expected:
            self.all_connected.set()


async def _listen(
    request: Any,
    heard: Heard,
    crowd: _Crowd,
    read: Callable[[aiohttp.ClientResponse, Heard], Coroutine[Any, Any, None]],
    answered: Callable[[aiohttp.ClientResponse], None] = lambda response: None,
) -> None:
    """One listener: its request (an aiohttp request context), its answer counted, its body read by `read`."""
    try:
        async with request as response:
            heard.status = response.status
            crowd.count_answer()
            if response.status != 200:
                return
            answered(response)
            crowd.enter()
            try:
                await read(response, heard)
            finally:
                crowd.leave()
    except (aiohttp.ClientError, TimeoutError) as exc:
        heard.error = repr(exc)
        crowd.count_answer()


async def _read_sse(response: aiohttp.ClientResponse, heard: Heard) -> None:
    buffer = b""
    async for data in response.content.iter_any():
        now = time.perf_counter()
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            lines = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
            if lines.get(b"event") == b"audio":
                body = json.loads(lines[b"data"])
                heard.pcm += base64.b64decode(body["pcm_s16le_base64"])
                heard.arrived.append((body["seq"], now))
            elif lines.get(b"event") == b"end":
                heard.ended = True
                return
            elif lines.get(b"event") == b"error":
                heard.error = lines.get(b"data", b"").decode()
                return


def _started_by(heard: Heard, start: Callable[[str], None]) -> Callable[[aiohttp.ClientResponse], None]:
    """What a /tts_stream listener does with its answer's headers: note its job, and have the producer start it."""

    def answered(response: aiohttp.ClientResponse) -> None:
        heard.job_id = response.headers["X-Session-Id"]
        start(heard.job_id)

    return answered


async def _read_wav(response: aiohttp.ClientResponse, heard: Heard) -> None:
    """The PCM after the WAV header; each arrival counted as the chunk it completes (chunks are of one size)."""
    chunk_bytes = int(SAMPLE_RATE * CHUNK_SECONDS) * SAMPLE_WIDTH
    received = b""
    async for data in response.content.iter_any():
        now = time.perf_counter()
        received += data
        done_before = max(0, len(heard.pcm)) // chunk_bytes
        heard.pcm[:] = received[WAV_HEADER_BYTES:]
        for seq in range(done_before + 1, len(heard.pcm) // chunk_bytes + 1):
            heard.arrived.append((seq, now))
    heard.ended = True


async def _after(seconds: float, listener: Coroutine[Any, Any, None]) -> None:
    await asyncio.sleep(seconds)
    await listener


def _delays(heard: list[Heard], producer: FakeProducer) -> tuple[list[float], list[float]]:
    first, every = [], []
    for h in heard:
        for seq, at in h.arrived:
            written = producer.written.get((h.job_id, seq))
            if written is None:
                continue
            delay = (at - written) * 1000
            every.append(delay)
            if seq == 1:
                first.append(delay)
    return first, every


def _complete(heard: Heard, chunks: int) -> bool:
    return heard.status == 200 and heard.ended and bytes(heard.pcm) == job_pcm(heard.job_id, chunks)


def _result(
    heard: list[Heard], producer: FakeProducer, crowd: _Crowd, rss: tuple[int, int], cpu: float, wall: float
) -> FanoutResult:
    refused: dict[int, int] = {}
    for h in heard:
        if h.status not in (0, 200):
            refused[h.status] = refused.get(h.status, 0) + 1
    first, every = _delays(heard, producer)
    errors = [f"{h.job_id}: {h.error}" for h in heard if h.error] + producer.failures
    return FanoutResult(
        listeners=len(heard),
        complete=sum(_complete(h, producer.chunks) for h in heard),
        refused=refused,
        errors=errors[:20],
        held=crowd.most,
        first_audio_ms=first,
        chunk_ms=every,
        rss_before_kb=rss[0],
        rss_held_kb=rss[1],
        cpu_seconds=cpu,
        wall_seconds=wall,
    )


def _session(headers: dict[str, str]) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=300))


def sse_fanout(
    base_url: str,
    redis_url: str,
    api_pid: int,
    *,
    jobs: int,
    per_job: int,
    chunks: int = 4,
    interval: float = 0.4,
    spread: float = 4.0,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    on_held: Callable[[], None] = lambda: None,
) -> FanoutResult:
    """`jobs` jobs (POST /jobs, nothing synthesizes them), `per_job` SSE listeners of each (GET /jobs/{id}/stream),
    all connected and waiting; then the producer starts the jobs, their first chunks spread over `spread` seconds
    (jobs start one after another on a real farm), the next ones `interval` apart. `on_held` runs while all the
    listeners are connected and waiting, before any audio."""
    return asyncio.run(_sse_fanout(base_url, redis_url, api_pid, jobs, per_job, chunks, interval, spread, body,
                                   headers or {}, on_held))  # fmt: skip


async def _sse_fanout(
    base_url: str,
    redis_url: str,
    api_pid: int,
    jobs: int,
    per_job: int,
    chunks: int,
    interval: float,
    spread: float,
    body: dict[str, Any],
    headers: dict[str, str],
    on_held: Callable[[], None],
) -> FanoutResult:
    listeners = jobs * per_job
    producer = FakeProducer(redis_url, chunks, interval)
    async with _session(headers) as session:
        try:
            ids = [await _create_job(session, base_url, body, n) for n in range(jobs)]
            rss_before, cpu_before, began = rss_kb(api_pid), cpu_seconds(api_pid), time.perf_counter()
            crowd = _Crowd(listeners)
            heard = [Heard(job_id=job_id) for job_id in ids for _ in range(per_job)]
            tasks = [
                asyncio.create_task(_listen(session.get(f"{base_url}/jobs/{h.job_id}/stream"), h, crowd, _read_sse))
                for h in heard
            ]
            # An SSE response starts with its first event: the API's count of held requests says who is connected.
            crowd.most = await _held_requests(session, base_url, listeners)
            rss_held = rss_kb(api_pid)
            await asyncio.to_thread(on_held)
            start = time.perf_counter()
            for n, job_id in enumerate(ids):
                producer.start(job_id, start + spread * n / jobs)
            await asyncio.wait_for(asyncio.gather(*tasks), 120 + spread + chunks * interval)
        finally:
            producer.stop()
        wall = time.perf_counter() - began
        return _result(heard, producer, crowd, (rss_before, rss_held), cpu_seconds(api_pid) - cpu_before, wall)


async def _held_requests(session: aiohttp.ClientSession, base_url: str, wanted: int, timeout: float = 120) -> int:
    """Wait until the API holds `wanted` synthesis responses (GET /health's `requests.in_use`); that number."""
    deadline = time.perf_counter() + timeout
    while True:
        async with session.get(f"{base_url}/health") as response:
            in_use = int((await response.json())["requests"]["in_use"])
        if in_use >= wanted or time.perf_counter() > deadline:
            return in_use
        await asyncio.sleep(0.2)


async def _create_job(session: aiohttp.ClientSession, base_url: str, body: dict[str, Any], n: int) -> str:
    async with session.post(f"{base_url}/jobs", json={**body, "text": f"{body['text']} {n}."}) as response:
        created = await response.json()
        if response.status != 202:
            raise RuntimeError(f"POST /jobs answered {response.status}: {created}")
        return str(created["id"])


def tts_stream_fanout(
    base_url: str,
    redis_url: str,
    api_pid: int,
    *,
    streams: int,
    chunks: int = 10,
    interval: float = 0.4,
    spread: float = 0.0,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> FanoutResult:
    """`streams` POST /tts_stream requests, sent one after another over `spread` seconds (0: at once); each job's
    chunks are written (the first at once, then `interval` apart) as soon as its response's headers arrive. The
    streams last `chunks` x `interval` seconds: long enough, with the spread, for all to be held at once."""
    return asyncio.run(
        _tts_stream_fanout(base_url, redis_url, api_pid, streams, chunks, interval, spread, body, headers or {})
    )


async def _tts_stream_fanout(
    base_url: str,
    redis_url: str,
    api_pid: int,
    streams: int,
    chunks: int,
    interval: float,
    spread: float,
    body: dict[str, Any],
    headers: dict[str, str],
) -> FanoutResult:
    async with _session(headers) as session:
        rss_before, cpu_before, began = rss_kb(api_pid), cpu_seconds(api_pid), time.perf_counter()
        crowd = _Crowd(streams)
        heard = [Heard() for _ in range(streams)]
        producer = FakeProducer(redis_url, chunks, interval)
        rss_held = rss_before
        try:
            url = f"{base_url}/tts_stream"
            tasks = [
                asyncio.create_task(
                    _after(
                        spread * n / streams,
                        _listen(
                            session.post(url, json={**body, "text": f"{body['text']} {n}."}),
                            h,
                            crowd,
                            _read_wav,
                            _started_by(h, producer.start),
                        ),
                    )
                )
                for n, h in enumerate(heard)
            ]
            await asyncio.wait_for(crowd.all_connected.wait(), 120 + spread)
            rss_held = rss_kb(api_pid)
            await asyncio.wait_for(asyncio.gather(*tasks), 120 + spread + chunks * interval)
        finally:
            producer.stop()
        wall = time.perf_counter() - began
        return _result(heard, producer, crowd, (rss_before, rss_held), cpu_seconds(api_pid) - cpu_before, wall)
