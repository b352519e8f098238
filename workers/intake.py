"""Whether a worker process consumes bulk work: only while it has a batch slot free for it, so that no worker holds
bulk tasks it cannot start while another worker could (a task a worker holds is invisible to the others until it
finishes).

A worker runs two Celery threads per batch slot (workers/celery_app.py): room for a full batch of bulk segments and
as many live ones, which take the bulk ones' slots (workers/scheduler.py pauses those). It always consumes the live
queue; it consumes the bulk queue only while its live and bulk segments together leave a slot free.

Switching is Celery's own remote-control operation (`Consumer.cancel_task_queue` / `add_task_queue`), run in the
consumer's thread. Only the bulk queue is ever switched, because kombu's Redis transport
- empties the consumed queues in the order they were added (celery_config.py), and bulk, added back, stays last;
- defers a cancel that arrives during a read until the read ends, and then drops the queue's callback by name: a
  queue cancelled and added back in one go would be left with no consumer (its messages bounced forever).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.priority import Priority
from shared.tasks import BULK_QUEUE

log = logging.getLogger(__name__)


def priority_of_queue(queue: str | None) -> Priority:
    return Priority.BULK if queue == BULK_QUEUE else Priority.LIVE


class Intake:
    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._held = dict.fromkeys(Priority, 0)
        self._consuming_bulk: bool | None = True  # None: unknown (a switch failed): the next change sets it again
        self._consumer: Any = None  # Celery's Consumer, once the worker is ready
        self._lock = threading.RLock()  # _switch may run at once, inside a change (a consumer without a loop)

    def attach(self, consumer: Any) -> None:
        with self._lock:
            self._consumer = consumer
            self._apply()

    def took(self, priority: Priority) -> None:
        with self._lock:
            self._held[priority] += 1
            self._apply()

    def released(self, priority: Priority) -> None:
        with self._lock:
            self._held[priority] = max(0, self._held[priority] - 1)
            self._apply()

    def held(self, priority: Priority) -> int:
        return self._held[priority]

    def wants_bulk(self) -> bool:
        return self._held[Priority.LIVE] + self._held[Priority.BULK] < self.max_batch

    def _apply(self) -> None:
        wanted = self.wants_bulk()
        if self._consumer is None or wanted == self._consuming_bulk:
            return
        self._consuming_bulk = wanted
        self._consumer.call_soon(self._switch, self._consumer, wanted)

    def _switch(self, consumer: Any, wanted: bool) -> None:
        """In the consumer's thread."""
        try:
            consuming = consumer.task_consumer.consuming_from(BULK_QUEUE)
            if consuming and not wanted:
                consumer.cancel_task_queue(BULK_QUEUE)
            elif wanted and not consuming:
                consumer.add_task_queue(BULK_QUEUE)
        except Exception:  # the connection is being re-established; the next change of what it holds retries
            log.warning("could not %s the bulk queue", "consume" if wanted else "stop consuming", exc_info=True)
            with self._lock:
                self._consuming_bulk = None
