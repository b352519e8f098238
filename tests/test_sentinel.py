"""Redis that fails over: the farm finds Redis through Sentinel (REDIS_SENTINELS), and when the master dies
mid-stream it goes on with the promoted replica: listeners resume from their cursors and get every sample once, and
the segment cut off resumes from the audio the replica holds."""

from __future__ import annotations

import functools
import uuid

import pytest
import redis
import requests
from redis.sentinel import SentinelConnectionPool

from shared import streams
from shared.redis_client import new_client
from shared.settings import Settings
from tests.audio import ResumingListener, xtts_samples
from tools.localfarm import Farm, RedisSentinels, RedisServer, tts_body, wait_for

SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)
# Audio tokens of the segment the failover cuts (chunks of 5): most of it is still to come when the master dies.
TOKENS = 150
CHUNK = 5
Listener = functools.partial(ResumingListener, retry_errors=True)


def test_a_write_after_lost_entries_stops_its_run(redis_server: RedisServer) -> None:
    """What a run finds when Redis failed over to a replica that lacked its last chunks: its next write is refused
    (the stream does not end with the chunk before it), and a new run resumes after the chunks the stream holds."""
    r = redis.Redis.from_url(redis_server.url)
    job_id = uuid.uuid4().hex
    writer = streams.StreamWriter(r, job_id, 0, "run-1", 60)
    writer.claim()
    writer.audio(1, b"\x01\x00" * 10, tokens=(1, 2))
    writer.audio(2, b"\x02\x00" * 10, tokens=(3, 4))
    # The stream as the promoted replica has it: chunk 2 never reached it.
    key = streams.segment_key(job_id, 0)
    r.delete(key)
    writer.audio(1, b"\x01\x00" * 10, tokens=(1, 2))
    with pytest.raises(streams.StreamGap):
        writer.audio(3, b"\x03\x00" * 10, tokens=(5, 6))
    resumed = streams.StreamWriter(r, job_id, 0, "run-2", 60)
    held = resumed.claim()
    assert (held.last_seq, held.tokens) == (1, {0: [1, 2]})
    resumed.audio(2, b"\x04\x00" * 10, tokens=(7, 8))
    resumed.end(3)
    with pytest.raises(
        streams.StreamGap
    ):  # nor can an entry be written twice (a write retried after its reply was lost)
        resumed.end(3)
    assert streams.segment_pcm(r, job_id, 0) == b"\x01\x00" * 10 + b"\x04\x00" * 10


def test_a_reader_whose_stream_is_made_again_under_it_goes_on_from_its_sample(redis_server: RedisServer) -> None:
    """A reader's command retried on the promoted replica goes on from an entry id that now names other audio: it
    notices (a chunk that does not start where the ones it read end), reads the segment again from its start and
    gives the listener what follows the last sample it had, once."""
    r = redis.Redis.from_url(redis_server.url)
    job_id = uuid.uuid4().hex
    first = streams.StreamWriter(r, job_id, 0, "run-1", 60)
    first.claim()
    first.audio(1, b"\x01\x00" * 10, start=0)
    first.audio(2, b"\x02\x00" * 10, start=10)
    reader = streams.read_chunks(r, job_id, 1, block_ms=100)
    heard = [next(reader), next(reader)]  # 20 samples: chunks 1 and 2 as the old master had them
    r.delete(streams.segment_key(job_id, 0))  # the promoted replica had chunk 1 only; a new run made the rest
    again = streams.StreamWriter(r, job_id, 0, "run-2", 60)
    again.claim()
    again.audio(1, b"\x01\x00" * 10, start=0)
    for seq, start in ((2, 10), (3, 15), (4, 20)):
        again.audio(seq, bytes([seq, 0]) * 5, start=start)
    again.end(5)
    rest = list(reader)
    assert [str(c.cursor) for c in heard + rest] == ["0-1-10", "0-2-20", "0-4-25"]
    assert rest[0].pcm == b"\x04\x00" * 5  # samples 20 to 25, from the new run: none twice, none missing


def test_the_farms_redis_client_follows_the_sentinels() -> None:
    """With REDIS_SENTINELS, REDIS_URL gives only the database and password; the broker gets one sentinel:// URL
    per sentinel, and the master's name."""
    from celery_config import celery_config

    settings = Settings(
        REDIS_URL="redis://:s%40cret@ignored:1/3",
        REDIS_SENTINELS="10.0.0.1:26379, sentinel-b:26380",
        REDIS_SENTINEL_MASTER="farm",
    )
    client = new_client(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "farm"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "s@cret")
    config = celery_config(settings)
    assert config["broker_url"] == "sentinel://:s%40cret@10.0.0.1:26379/3;sentinel://:s%40cret@sentinel-b:26380/3"
    assert config["broker_transport_options"]["master_name"] == "farm"
    assert config["result_backend_transport_options"] == {"master_name": "farm", "sentinel_kwargs": {}}
    with pytest.raises(Exception, match="REDIS_SENTINELS"):
        Settings(REDIS_SENTINELS="host-without-port")
    with pytest.raises(Exception, match="TLS"):
        Settings(REDIS_SENTINELS="a:1", REDIS_URL="rediss://host:6380/0")
    # The sentinels' own password, for both kinds of client.
    guarded = Settings(REDIS_SENTINELS="a:1", REDIS_SENTINEL_PASSWORD="watch")
    sentinel_pool = new_client(guarded).connection_pool
    assert isinstance(sentinel_pool, SentinelConnectionPool)
    assert sentinel_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] == "watch"
    assert celery_config(guarded)["broker_transport_options"]["sentinel_kwargs"] == {"password": "watch"}


def _job(farm: Farm, sentences: int = 1, tokens: int = TOKENS) -> str:
    created = requests.post(
        farm.url("/jobs"), json=tts_body(" ".join([SENTENCE] * sentences), tokens, CHUNK), timeout=30
    )
    assert created.status_code == 202, created.text
    job_id: str = created.json()["id"]
    return job_id


@pytest.mark.farm
def test_the_master_killed_mid_stream_the_farm_goes_on_with_the_promoted_replica(
    sentinel_farm: tuple[Farm, RedisSentinels],
) -> None:
    """The replica is cut off while the master takes the segment's next chunks, then the master is
    killed: the promoted replica lacks chunks that the listener has heard and SQL has counted, as asynchronous
    replication can leave it. The run cut off resumes after the chunks the replica holds; the listener resumes from
    its cursor: every sample once, in order, none missing."""
    farm, sentinels = sentinel_farm
    job_id = _job(farm)
    listener = Listener(farm, job_id)
    wait_for(lambda: farm.job(job_id)["progress"]["chunks"] > 2, 120, "audio before the failover")
    sentinels.cut_replication()
    held = farm.job(job_id)["progress"]["chunks"]
    counted = wait_for(
        lambda: (c := farm.job(job_id)["progress"]["chunks"]) >= held + 2 and c, 60, "chunks only the master has"
    )
    sentinels.master.kill()
    kept = streams.delivered(redis.Redis(port=sentinels.replica.port), streams.segment_key(job_id, 0))
    assert kept.last_seq < counted, "the replica should lack the chunks written while it was held back"
    wait_for(lambda: sentinels.master_port() == sentinels.replica.port, 60, "the sentinels to promote the replica")

    listener.complete(TOKENS, timeout=240)
    status = farm.wait_for_state(job_id, ("succeeded",), 120)
    assert status["progress"]["audio_samples"] == xtts_samples(TOKENS)
    assert len(listener.cursors) > 1, "the listener's stream should have broken off with the master, and resumed"
    print(f"replica held {kept.last_seq} chunks of the {counted} counted when the master died")

    # The farm goes on, on the promoted replica alone.
    after = _job(farm, tokens=20)
    Listener(farm, after).complete(20, timeout=240)
