"""Whether a worker consumes bulk work (workers/intake.py), from what it holds: only while a batch slot is free;
live work always; switched through Celery's consumer, the bulk queue alone. The consumer here records the calls;
tests/test_live_and_bulk.py shows a real worker taking a live segment while bulk work fills its batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.priority import Priority
from shared.tasks import BULK_QUEUE, SYNTHESIS_QUEUE
from workers.intake import Intake, priority_of_queue


class RecordingConsumer:
    """Celery's Consumer as far as the intake uses it: call_soon runs the operation at once."""

    def __init__(self) -> None:
        self.queues = [SYNTHESIS_QUEUE, BULK_QUEUE]
        self.cancelled: list[str] = []
        self.broken = False
        self.task_consumer = self

    def consuming_from(self, queue: str) -> bool:
        return queue in self.queues

    def cancel_task_queue(self, queue: str) -> None:
        if self.broken:
            raise ConnectionError("the broker connection is being re-established")
        self.cancelled.append(queue)
        self.queues.remove(queue)

    def add_task_queue(self, queue: str) -> None:
        self.queues.append(queue)

    def call_soon(self, operation: Callable[..., Any], *args: Any) -> None:
        operation(*args)


def test_bulk_is_consumed_only_while_a_batch_slot_is_free_and_live_always() -> None:
    intake, consumer = Intake(max_batch=2), RecordingConsumer()
    intake.attach(consumer)
    intake.took(Priority.BULK)
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]
    intake.took(Priority.BULK)  # the batch is full of bulk work: no more bulk; live still (it pauses a bulk one)
    assert consumer.queues == [SYNTHESIS_QUEUE]
    intake.took(Priority.LIVE)
    intake.released(Priority.BULK)  # a live and a bulk segment: still no slot free
    assert consumer.queues == [SYNTHESIS_QUEUE]
    intake.released(Priority.LIVE)
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]  # added back last: kombu empties queues in this order
    assert consumer.cancelled == [BULK_QUEUE]  # the live queue is never cancelled (see workers/intake.py)


def test_a_switch_that_failed_is_made_again_at_the_next_change() -> None:
    intake, consumer = Intake(max_batch=1), RecordingConsumer()
    intake.attach(consumer)
    consumer.broken = True
    intake.took(Priority.BULK)  # the switch fails (the broker connection is being re-established)
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]
    consumer.broken = False
    intake.took(Priority.LIVE)  # still no slot: the switch is made now
    assert consumer.queues == [SYNTHESIS_QUEUE]


def test_the_queue_a_task_came_from_names_its_class() -> None:
    assert priority_of_queue(BULK_QUEUE) is Priority.BULK
    assert priority_of_queue(SYNTHESIS_QUEUE) is Priority.LIVE and priority_of_queue(None) is Priority.LIVE
