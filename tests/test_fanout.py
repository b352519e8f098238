"""Thousands of listeners per API process: their waits share one Redis reader (api/fanout.py), and under gevent
(API_WORKER_CLASS, the default) each connection is a greenlet rather than a thread.

The hub's own tests use a real Redis and no farm; the farm's hold a thousand SSE listeners (and a crowd of
/tts_stream responses) on one API process fed by a fake producer (tools/fanout.py), and check that every listener
got its job's audio exactly, with neither a thread nor a Redis connection per listener. How fast they get it is the
benchmark's (`make bench`, section fanout), not a test's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from api.fanout import HUB_BLOCK_MS, StreamHub
from shared.redis_client import POOL_SIZE
from tests.conftest import RedisServer
from tools.fanout import api_worker_pid, redis_connections_of, sse_fanout, tts_stream_fanout
from tools.localfarm import DEV_SPEAKER, Farm, tts_body


@pytest.fixture
def hub_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/11")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def hub(hub_redis: redis.Redis) -> Iterator[StreamHub]:
    blocking = redis.Redis(connection_pool=redis.ConnectionPool(**hub_redis.connection_pool.connection_kwargs))
    made = StreamHub(blocking, shared=lambda: hub_redis)
    yield made
    made.close()


def _wait_in_threads(hub: StreamHub, reads: list[dict[str, str]], block_ms: int) -> tuple[list[Any], Callable]:
    """Each read in a thread of its own (as each listener is); `join()` waits for them all."""
    results: list[Any] = [None] * len(reads)

    def one(i: int) -> None:
        results[i] = hub.xread(reads[i], count=64, block=block_ms)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reads))]
    for thread in threads:
        thread.start()

    def join() -> None:
        for thread in threads:
            thread.join(30)

    return results, join


def _wait_until_waiting(hub: StreamHub, n: int) -> None:
    deadline = time.monotonic() + 10
    while hub.waiting < n:
        assert time.monotonic() < deadline, f"{hub.waiting} of {n} listeners waiting"
        time.sleep(0.01)


def test_each_waiter_gets_the_entries_after_its_own_id_and_one_connection_serves_them_all(
    hub: StreamHub, hub_redis: redis.Redis
) -> None:
    first = bytes(hub_redis.xadd("s", {b"n": b"1"})).decode()
    # A listener that has nothing yet gets the first entry at once, without waiting for the hub.
    assert hub.xread({"s": "0-0"}, count=64, block=1000) == [[b"s", [(first.encode(), {b"n": b"1"})]]]
    # Ten listeners that have it wait for the next; ten more wait on another stream.
    results, join = _wait_in_threads(hub, [{"s": first}] * 10 + [{"t": "0-0"}] * 10, block_ms=20_000)
    _wait_until_waiting(hub, 20)
    blocked = []
    for _ in range(20):  # the hub pauses between its reads (GATHER_SECONDS): look a few times
        blocked.append(len([c for c in hub_redis.client_list() if "b" in c["flags"] and c["db"] == "11"]))
        time.sleep(0.01)
    assert max(blocked) == 1, f"the 20 waits share the hub's one blocking read: {blocked}"
    second = hub_redis.xadd("s", {b"n": b"2"})
    third = hub_redis.xadd("t", {b"n": b"3"})
    join()
    assert results[:10] == [[[b"s", [(second, {b"n": b"2"})]]]] * 10
    assert results[10:] == [[[b"t", [(third, {b"n": b"3"})]]]] * 10
    assert hub.waiting == 0


def test_a_new_listener_wakes_the_hub_blocked_on_other_streams(hub: StreamHub, hub_redis: redis.Redis) -> None:
    """The hub blocks HUB_BLOCK_MS (2 s) on the streams it knows; a newcomer's stream is covered at once, not at
    the hub's next read (a listener of a job just started would wait seconds for its first audio)."""
    waiting, join_first = _wait_in_threads(hub, [{"old": "0-0"}], block_ms=20_000)
    _wait_until_waiting(hub, 1)
    time.sleep(0.2)  # the hub is in its blocking read of "old" alone
    newcomer, join_second = _wait_in_threads(hub, [{"new": "0-0"}], block_ms=HUB_BLOCK_MS // 2)
    _wait_until_waiting(hub, 2)
    entry = hub_redis.xadd("new", {b"n": b"1"})
    join_second()
    assert newcomer == [[[b"new", [(entry, {b"n": b"1"})]]]]
    hub_redis.xadd("old", {b"n": b"1"})
    join_first()
    assert waiting[0] and waiting[0][0][0] == b"old"


def test_a_wait_with_nothing_new_ends_empty_and_leaves_the_hub(hub: StreamHub) -> None:
    began = time.monotonic()
    assert hub.xread({"quiet": "0-0"}, count=64, block=300) == []
    assert 0.25 <= time.monotonic() - began < 5
    assert hub.waiting == 0


def test_the_hubs_redis_failing_fails_its_waiters_as_their_own_read_would(hub: StreamHub) -> None:
    results: list[Any] = []

    def wait() -> None:
        try:
            hub.xread({"s": "0-0"}, count=64, block=20_000)
        except redis.RedisError as exc:
            results.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    _wait_until_waiting(hub, 1)
    hub.close()  # its connection closed under its blocking read
    thread.join(10)
    assert len(results) == 1 and isinstance(results[0], redis.ConnectionError)


# --- on a farm -------------------------------------------------------------------------------------------------
# A farm without workers (the producer writes the audio), with the settings' own read block (the test farms' 200 ms
# makes every idle listener look at its job five times a second) and room for the crowd's jobs.
FANOUT_FARM: dict[str, Any] = {
    "workers": 0,
    "STREAM_READ_BLOCK_MS": "1000",
    "MAX_JOBS_PER_TENANT": "5000",
    "MAX_QUEUED_SEGMENTS": "100000",
}


def _api_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def test_one_api_process_holds_a_thousand_sse_listeners_with_one_reader(farm_with: Callable[..., Farm]) -> None:
    farm = farm_with(**FANOUT_FARM)
    assert farm.api is not None
    pid = api_worker_pid(farm.api.pid)
    seen: dict[str, int] = {}

    def held() -> None:  # the whole crowd connected and waiting: the API's threads and Redis connections
        connections = redis_connections_of(pid, farm.redis())
        blocked = [c for c in connections if "b" in c["flags"]]
        seen.update(threads=_api_threads(pid), redis=len(connections), blocked=len(blocked))

    body = tts_body("A thousand people are listening to this", 20, speaker=DEV_SPEAKER)
    result = sse_fanout(farm.base_url, farm.redis_url, pid, jobs=100, per_job=10, chunks=3, body=body, on_held=held)
    row = result.row("1000 SSE listeners")
    print(row)
    assert result.errors == [] and result.refused == {}
    assert result.held == 1000, "every listener connected at once"
    assert result.complete == 1000, "every listener got its job's audio, exactly"
    # Neither a thread nor a Redis connection per listener: one blocking read (the hub's) waits for them all, and
    # the pool for their quick reads and checks stays within its bound.
    assert seen["threads"] < 50, seen
    assert seen["blocked"] == 1, seen
    assert seen["redis"] <= POOL_SIZE + 10, seen  # and a few of its own: the hub's, the broker's


def test_a_crowd_of_tts_stream_responses_each_gets_its_own_audio(farm_with: Callable[..., Farm]) -> None:
    farm = farm_with(**FANOUT_FARM)
    assert farm.api is not None
    pid = api_worker_pid(farm.api.pid)
    body = tts_body(f"Stream {uuid.uuid4().hex[:6]}", 20, speaker=DEV_SPEAKER)
    result = tts_stream_fanout(farm.base_url, farm.redis_url, pid, streams=200, chunks=15, body=body)
    print(result.row("200 /tts_stream"))
    assert result.errors == [] and result.refused == {}
    assert result.complete == 200
    assert result.held > 100, "the streams overlapped"
