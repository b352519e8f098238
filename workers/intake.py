"""Which synthesis queues a worker process consumes: live work while it has room for it, bulk work only while a
batch slot is free, so no worker holds tasks it cannot start while another worker could (a task a worker holds
is invisible to the others until it finishes).

A worker runs two Celery threads per batch slot (workers/celery_app.py): one set for live segments, one for bulk.
Live segments take the slots of bulk ones (workers/scheduler.py pauses those), so the worker consumes:

* the live queue while it holds fewer live segments than it has batch slots;
* the bulk queue while its live and bulk segments together leave a slot free.

Switching is Celery's own remote-control operation (`Consumer.cancel_task_queue` / `add_task_queue`), run in
the consumer's thread. kombu's Redis transport empties the consumed queues in the order they were added
(celery_config.py), so queues are always re-added in priority order: live before bulk.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.priority import Priority
from shared.tasks import BULK_QUEUE

log = logging.getLogger(__name__)

ORDER = (Priority.LIVE, Priority.BULK)


def priority_of_queue(queue: str | None) -> Priority:
    return Priority.BULK if queue == BULK_QUEUE else Priority.LIVE


class Intake:
    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._held = dict.fromkeys(ORDER, 0)
        self._consuming = dict.fromkeys(ORDER, True)
        self._consumer: Any = None  # Celery's Consumer, once the worker is ready
        self._lock = threading.Lock()

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

    def wanted(self) -> dict[Priority, bool]:
        live, bulk = self._held[Priority.LIVE], self._held[Priority.BULK]
        return {Priority.LIVE: live < self.max_batch, Priority.BULK: live + bulk < self.max_batch}

    def _apply(self) -> None:
        wanted = self.wanted()
        if self._consumer is None or wanted == self._consuming:
            return
        self._consuming = wanted
        self._consumer.call_soon(_switch, self._consumer, wanted)


def _switch(consumer: Any, wanted: dict[Priority, bool]) -> None:
    """In the consumer's thread: stop consuming both synthesis queues, then consume the wanted ones again in
    priority order (a queue added later is emptied after the others)."""
    try:
        for priority in ORDER:
            if consumer.task_consumer.consuming_from(priority.queue):
                consumer.cancel_task_queue(priority.queue)
        for priority in ORDER:
            if wanted[priority]:
                consumer.add_task_queue(priority.queue)
    except Exception:  # the connection is being re-established: the consumer restarts with the selected queues
        log.warning("could not switch the consumed queues to %s", wanted, exc_info=True)
