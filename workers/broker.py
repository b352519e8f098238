"""The workers' broker transport: kombu's Redis transport, made to survive a broker that goes away mid-task.

kombu 5.7 misbehaves in two places when the broker connection breaks while a worker holds unacknowledged
messages (the farm acknowledges late): closing the broken channel restores its unacknowledged messages through
a connection that is already released, and a task that finishes afterwards acknowledges its message on that
closed channel. Both raise an AttributeError that Celery treats as unrecoverable, so a Redis restart killed every
worker process that had a task in hand. Here neither happens: restoring is left to the visibility timeout, and
an acknowledgement on a closed channel is dropped (the message stays unacknowledged and comes back after the
visibility timeout). The farm does not depend on either: a segment's state is in SQL, a run that stopped lets
its lease lapse and the reaper hands the segment on, and a redelivered message finds its segment done or held
and leaves without doing anything.

kombu has no supported hook for either behaviour, so this overrides its Redis channel, written for and pinned to
kombu KOMBU_VERSION (requirements-api.txt). tests/test_broker_transport.py checks that version, the signatures
of the overridden methods, and, against a real Redis, the kombu behaviour relied on: a channel's `do_restore` is
what keeps its close from putting unacknowledged messages back, and acknowledging goes through the channel's
QoS. After a kombu upgrade that test says what to re-check.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

KOMBU_VERSION = "5.7.0"


class _SurvivingBrokerLoss:
    """The two overrides, for kombu's Redis channel and its Sentinel channel alike."""

    do_restore = False  # no restore while closing: see above
    closed: bool

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        if self.closed:
            log.info("not acknowledging message %s: its broker connection broke (redelivered later)", delivery_tag)
            return
        super().basic_ack(delivery_tag, multiple)  # type: ignore[misc]

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self.closed:
            log.info("not rejecting message %s: its broker connection broke (redelivered later)", delivery_tag)
            return
        super().basic_reject(delivery_tag, requeue)  # type: ignore[misc]


class Channel(_SurvivingBrokerLoss, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_SurvivingBrokerLoss, kombu_redis.SentinelChannel):
    """With REDIS_SENTINELS: each new connection asks the sentinels for the master (a failover is a broker that
    went away, then came back at another address)."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(sentinels: bool) -> str:
    return "workers.broker:SentinelTransport" if sentinels else "workers.broker:Transport"
