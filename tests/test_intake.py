"""Which queues a worker consumes (workers/intake.py), from what it holds: live work while it holds fewer live
segments than batch slots, bulk work only while a slot is free; switched through Celery's consumer, live re-added
before bulk. The consumer here records the calls;
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
        self.task_consumer = self

    def consuming_from(self, queue: str) -> bool:
        return queue in self.queues

    def cancel_task_queue(self, queue: str) -> None:
        self.queues.remove(queue)

    def add_task_queue(self, queue: str) -> None:
        self.queues.append(queue)

    def call_soon(self, operation: Callable[..., Any], *args: Any) -> None:
        operation(*args)


def test_bulk_stops_when_the_batch_is_full_and_live_when_live_fills_it() -> None:
    intake, consumer = Intake(max_batch=2), RecordingConsumer()
    intake.attach(consumer)
    intake.took(Priority.BULK)
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]
    intake.took(Priority.BULK)  # the batch is full of bulk work: no more bulk, live still (it pauses a bulk one)
    assert consumer.queues == [SYNTHESIS_QUEUE]
    intake.took(Priority.LIVE)
    intake.took(Priority.LIVE)  # as many live segments as slots: nothing more
    assert consumer.queues == []
    intake.released(Priority.LIVE)
    assert consumer.queues == [SYNTHESIS_QUEUE]
    intake.released(Priority.LIVE)
    intake.released(Priority.BULK)
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]  # live first again: kombu empties them in this order


def test_the_queue_a_task_came_from_names_its_class() -> None:
    assert priority_of_queue(BULK_QUEUE) is Priority.BULK
    assert priority_of_queue(SYNTHESIS_QUEUE) is Priority.LIVE and priority_of_queue(None) is Priority.LIVE
