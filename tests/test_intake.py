"""What a worker takes from the broker (workers/intake.py), from what it holds: bulk work only while a batch slot is
free, switched through Celery's consumer, the bulk queue alone; live work while it holds fewer live segments than its
live capacity, through Celery's prefetch count. The consumer here records the calls; tests/test_live_and_bulk.py
shows a real worker taking a live segment while bulk work fills its batch, tests/test_live_admission.py one leaving
a live task past its capacity in the broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.priority import Priority
from shared.tasks import BULK_QUEUE, SYNTHESIS_QUEUE
from workers.intake import Intake, priority_of_queue


class RecordingQoS:
    """Celery's QoS: `update` sets the channel's prefetch count to `value`."""

    def __init__(self) -> None:
        self.value = 8  # Celery's initial count: one per thread
        self.applied: list[int] = []

    def update(self) -> None:
        self.applied.append(self.value)


class RecordingConsumer:
    """Celery's Consumer as far as the intake uses it: call_soon runs the operation at once."""

    def __init__(self) -> None:
        self.qos = RecordingQoS()
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


def test_live_work_is_taken_only_up_to_the_live_capacity_besides_the_bulk_work_held() -> None:
    capacity: list[int | None] = [None]
    intake, consumer = Intake(max_batch=4, live_capacity=lambda: capacity[0]), RecordingConsumer()
    intake.attach(consumer)
    assert consumer.qos.applied == [4]  # not measured yet: a batch's worth, not the 8 threads
    capacity[0] = 2
    intake.refresh()
    assert consumer.qos.applied[-1] == 2
    intake.took(Priority.BULK)  # a bulk segment held leaves the live capacity whole
    assert consumer.qos.applied[-1] == 3
    intake.took(Priority.LIVE)
    intake.took(Priority.LIVE)  # 2 live + 1 bulk held = 3: the worker takes nothing more
    assert consumer.qos.applied[-1] == 3 and consumer.qos.value == 3
    intake.released(Priority.BULK)
    assert consumer.qos.applied[-1] == 2
    capacity[0] = 16  # never more than the batch
    intake.refresh()
    assert consumer.qos.applied[-1] == 4
    assert consumer.qos.applied == [4, 2, 3, 2, 4]  # set only when it changes


class DeferringConsumer(RecordingConsumer):
    """A consumer whose loop runs the operations asked of it later, in no set order (kombu's hub keeps them in a
    set)."""

    def __init__(self) -> None:
        super().__init__()
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def call_soon(self, operation: Callable[..., Any], *args: Any) -> None:
        self.ready.append((operation, args))

    def run_loop_turn(self) -> None:
        ready, self.ready = self.ready, []
        for operation, args in reversed(ready):
            operation(*args)


def test_what_the_consumer_runs_late_or_out_of_order_still_leaves_the_state_wanted_now() -> None:
    intake, consumer = Intake(max_batch=4, live_capacity=lambda: 2), DeferringConsumer()
    intake.attach(consumer)
    for _ in range(4):
        intake.took(Priority.BULK)  # the batch fills with bulk work ...
    for _ in range(3):
        intake.released(Priority.BULK)  # ... and empties again, all within one turn of the consumer's loop
    consumer.run_loop_turn()
    assert consumer.qos.value == 3 and consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]
    consumer.qos = RecordingQoS()  # a broker reconnection: Celery starts a new QoS at one task per thread
    intake.refresh()  # every heartbeat
    consumer.run_loop_turn()
    assert consumer.qos.value == 3


def test_no_bulk_task_is_taken_that_the_batch_would_pause_at_once() -> None:
    intake, consumer = Intake(max_batch=4, live_capacity=lambda: 2), RecordingConsumer()
    intake.attach(consumer)
    intake.took(Priority.LIVE)  # with live work the batch runs 2 members: room for one bulk segment
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]
    intake.took(Priority.BULK)
    assert consumer.queues == [SYNTHESIS_QUEUE]  # a second one would wait paused: left to another worker
    intake.released(Priority.LIVE)
    assert consumer.queues == [SYNTHESIS_QUEUE, BULK_QUEUE]  # no live work: every slot again


def test_a_bulk_task_that_arrives_after_the_batch_filled_is_refused_and_live_ones_are_not() -> None:
    """The bulk queue's switch runs after the consumer's read in progress: a bulk task fetched in between reaches a
    worker whose batch is full. It is refused (the task sends it back to the broker, its segment still queued) and
    counts for nothing; a live task is always held."""
    intake, consumer = Intake(max_batch=2), RecordingConsumer()
    intake.attach(consumer)
    assert intake.take(Priority.BULK) and intake.take(Priority.BULK)
    assert not intake.take(Priority.BULK)
    assert intake.held(Priority.BULK) == 2
    assert intake.take(Priority.LIVE) and intake.held(Priority.LIVE) == 1
    intake.released(Priority.LIVE)
    intake.released(Priority.BULK)
    assert intake.take(Priority.BULK) and intake.held(Priority.BULK) == 2
