"""workers/broker.py overrides internals of kombu's Redis transport, which kombu may change in any release: this
pins the release it was written for and checks, against a real Redis, the kombu behaviour it relies on. When a
kombu upgrade fails here, re-check the two crashes workers/broker.py describes (a Redis restart while a worker
holds unacknowledged tasks: tests/test_faults.py and tests/test_resilience.py restart Redis under a working farm)
against the new kombu, then adapt the transport (or drop it, if kombu fixed them) and KOMBU_VERSION."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import kombu
import pytest
import redis
from kombu import Connection, Exchange, Message, Queue
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from tools.localfarm import RedisServer
from workers import broker

RECHECK = (
    "workers/broker.py was written for kombu {written}; the installed kombu is {installed}. Re-check the crashes "
    "its docstring describes against this kombu, adapt the transport, then set KOMBU_VERSION."
)
QUEUE = Queue("broker-test", Exchange("broker-test"), "broker-test")


def test_the_installed_kombu_is_the_one_the_transport_was_written_for() -> None:
    assert kombu.__version__ == broker.KOMBU_VERSION, RECHECK.format(
        written=broker.KOMBU_VERSION, installed=kombu.__version__
    )


def test_the_overridden_kombu_methods_are_the_ones_it_expects() -> None:
    for name in ("basic_ack", "basic_reject"):
        ours, theirs = (
            inspect.signature(getattr(broker.Channel, name)),
            inspect.signature(getattr(kombu_redis.Channel, name)),
        )
        assert list(ours.parameters) == list(theirs.parameters), f"kombu's Channel.{name} changed: {theirs}"
    # Closing a channel restores its unacknowledged messages unless the channel says `do_restore = False`.
    assert "self.channel.do_restore" in inspect.getsource(virtual.QoS.restore_unacked_once)
    assert broker.Transport.Channel is broker.Channel


@pytest.fixture
def url(redis_server: RedisServer) -> Iterator[str]:
    url = redis_server.url.rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


def _received(conn: Connection) -> Message:
    """One message published to the test queue, then received and not acknowledged (the farm acknowledges late)."""
    conn.Producer(conn.channel()).publish(
        {"job_id": "j"}, exchange=QUEUE.exchange, routing_key="broker-test", declare=[QUEUE]
    )
    got: list[Message] = []
    conn.Consumer(QUEUE, callbacks=[lambda _body, message: got.append(message)], channel=conn.channel()).consume()
    conn.drain_events(timeout=10)
    assert len(got) == 1
    return got[0]


def _where(url: str, message: Message) -> tuple[int, bool]:
    """(messages waiting in the queue, whether the message is among the unacknowledged ones)."""
    r = redis.Redis.from_url(url)
    return int(r.llen("broker-test")), bool(r.hexists("unacked", message.delivery_tag))


@pytest.mark.parametrize("transport", ["redis", "workers.broker:Transport"])
def test_closing_a_channel_restores_its_unacknowledged_messages_unless_the_farm_transport_does(
    url: str, transport: str
) -> None:
    with Connection(url, transport=transport) as conn:
        message = _received(conn)
        assert _where(url, message) == (0, True)
        message.channel.close()
        if transport == "redis":  # kombu's own: back in the queue at once
            assert _where(url, message) == (1, False), "kombu's Redis channel no longer restores when it closes"
        else:  # the farm's: left to the visibility timeout
            assert _where(url, message) == (0, True)


def test_an_acknowledgement_on_a_closed_channel_is_dropped_and_the_message_stays_unacknowledged(url: str) -> None:
    with Connection(url, transport="workers.broker:Transport") as conn:
        message = _received(conn)
        message.channel.close()
        message.ack()  # kombu's own channel would go through its QoS and released connection pool here
        assert _where(url, message) == (0, True)
        again = _received(conn)  # an open channel acknowledges as kombu's does
        again.ack()
        assert _where(url, again) == (0, False)
