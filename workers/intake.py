"""What a worker process takes from the broker: no task it cannot start well while another worker could (a task a
worker holds is invisible to the others until it finishes).

A worker runs two Celery threads per batch slot (workers/celery_app.py): room for a full batch of bulk segments and
as many live ones, which take the bulk ones' slots (workers/scheduler.py pauses those). It consumes the bulk queue
only while its live and bulk segments together leave a slot free. It takes live work only while it holds fewer live
segments than its live capacity (the streams it carries faster than real time, workers/capacity.py): past that, a
live task stays in the broker for a worker that can carry it, or until one of this worker's streams ends (the API
told its listener when to expect that: api/admission.py). That bound is Celery's prefetch count (QoS): the live
capacity plus the bulk segments held, so while live work fills the capacity the worker takes no task at all (a bulk
one could not run beside it: the scheduler would pause it at once).

Switching is Celery's own remote-control operation (`Consumer.cancel_task_queue` / `add_task_queue`), run in the
consumer's thread. Only the bulk queue is ever switched, because kombu's Redis transport
- empties the consumed queues in the order they were added (celery_config.py), and bulk, added back, stays last;
- defers a cancel that arrives during a read until the read ends, and then drops the queue's callback by name: a
  queue cancelled and added back in one go would be left with no consumer (its messages bounced forever).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from shared.priority import Priority
from shared.tasks import BULK_QUEUE
from workers.capacity import batch_limit

log = logging.getLogger(__name__)


def priority_of_queue(queue: str | None) -> Priority:
    return Priority.BULK if queue == BULK_QUEUE else Priority.LIVE


class Intake:
    def __init__(self, max_batch: int, live_capacity: Callable[[], int | None] = lambda: None) -> None:
        self.max_batch = max_batch
        self.live_capacity = live_capacity  # the scheduler's, once it exists; None: not measured yet
        self._held = dict.fromkeys(Priority, 0)
        self._consumer: Any = None  # Celery's Consumer, once the worker is ready
        self._sync_pending = False  # one _sync at a time in the consumer's queue: it reads the state when it runs
        self._lock = threading.RLock()  # _sync may run at once, inside a change (a consumer without a loop)

    def attach(self, consumer: Any) -> None:
        with self._lock:
            self._consumer = consumer
            self._apply()

    def took(self, priority: Priority) -> None:
        with self._lock:
            self._held[priority] += 1
            self._apply()

    def take(self, priority: Priority) -> bool:
        """Holds a task the worker received, if it can start it: a bulk one only while a slot is free. Switching the
        bulk queue off is asynchronous (it runs in the consumer's thread, after the read in progress), so a bulk task
        can arrive just after the batch filled; refused, it goes back to the broker, its segment still queued."""
        with self._lock:
            if priority is Priority.BULK and not self.wants_bulk():
                self._apply()
                return False
            self.took(priority)
            return True

    def released(self, priority: Priority) -> None:
        with self._lock:
            self._held[priority] = max(0, self._held[priority] - 1)
            self._apply()

    def held(self, priority: Priority) -> int:
        return self._held[priority]

    def refresh(self) -> None:
        """The live capacity may have moved (it is measured as the worker runs), or the consumer may have been
        rebuilt (a broker reconnection starts Celery's prefetch count afresh): applies what is wanted again."""
        with self._lock:
            self._apply()

    def batch_limit(self) -> int:
        """The members the scheduler runs at once now (workers/scheduler.py `_limit`): every slot without live work,
        the live capacity with it (never fewer than the live segments held)."""
        live = self._held[Priority.LIVE]
        return batch_limit(self.max_batch, live, self.live_capacity() if live else None)

    def wants_bulk(self) -> bool:
        """A bulk task is taken only if it can run at once: one the scheduler would pause is better left to another
        worker."""
        return self._held[Priority.LIVE] + self._held[Priority.BULK] < self.batch_limit()

    def prefetch(self) -> int:
        """How many tasks the worker may hold: its live capacity (every slot before it is measured) besides the bulk
        segments it holds, and never more than its Celery threads."""
        capacity = min(self.live_capacity() or self.max_batch, self.max_batch)
        return min(2 * self.max_batch, capacity + self._held[Priority.BULK])

    def _apply(self) -> None:
        if self._consumer is not None and not self._sync_pending:
            self._sync_pending = True
            self._consumer.call_soon(self._sync)

    def _sync(self) -> None:
        """In the consumer's thread: makes the consumer match what is wanted *now*. It reads the wanted state when it
        runs, not when it was asked for, because kombu's hub runs the callbacks of one loop turn in no set order,
        and it compares with the consumer's own state, which a broker reconnection resets."""
        with self._lock:
            self._sync_pending = False
            consumer, prefetch, wanted = self._consumer, self.prefetch(), self.wants_bulk()
        try:
            if consumer.qos.value != prefetch:
                # Celery's loop sets the channel's prefetch count to `qos.value` whenever they differ; kombu's Redis
                # transport then fetches only while the worker holds fewer unacknowledged tasks than that.
                consumer.qos.value = prefetch
                consumer.qos.update()
            consuming = consumer.task_consumer.consuming_from(BULK_QUEUE)
            if consuming and not wanted:
                consumer.cancel_task_queue(BULK_QUEUE)
            elif wanted and not consuming:
                consumer.add_task_queue(BULK_QUEUE)
        except Exception:  # the connection is being re-established: the next change, or heartbeat, applies it
            log.warning("could not apply the worker's intake (prefetch %d, bulk %s)", prefetch, wanted, exc_info=True)
