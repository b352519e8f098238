"""The workers' Celery application: `celery -A workers.celery_app worker`.

A worker process is one model with one batch scheduler, so it runs Celery's threads pool with two threads per
batch slot (one set for live segments, one for bulk ones, which yield their slots to live ones: workers/intake.py
decides which queues it consumes), prefetch multiplier 1 and late acknowledgement: no worker holds work it cannot
start. Run one such process per GPU. (This module stays light: Flower loads it too.)
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging

from celery_config import celery_config
from shared import logs
from shared.settings import get_settings
from workers.batch_size import max_batch
from workers.broker import transport_for

celery_app = Celery("xtts_farm", include=["workers.tasks"])
celery_app.conf.update(
    celery_config(get_settings()),
    worker_pool="threads",
    broker_transport=transport_for(bool(get_settings().redis_sentinels)),  # see workers/broker.py
)
app = celery_app  # the name `celery -A workers.celery_app` looks for


class ReceivedTaskFilter(logging.Filter):
    """Celery logs "Task xtts.synthesize_segment[<id>] received" before any task code runs, with the task's
    arguments as text in `record.data`: the job id is taken from there, so that line names its job too."""

    JOB_ID = re.compile(r"'job_id': '([0-9a-zA-Z_-]+)'")

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and getattr(record, "job_id", None) is None:
            found = self.JOB_ID.search(str(data.get("kwargs", "")))
            if found:
                record.job_id = found.group(1)
        return True


@setup_logging.connect
def _farm_logging(**_: Any) -> None:
    """The farm's logging (shared/logs.py) instead of Celery's: the same format as the API's, LOG_FORMAT and DEBUG
    honoured, job ids on every line. (A receiver of this signal keeps Celery from configuring logging itself.)"""
    logs.setup(get_settings(), [ReceivedTaskFilter()])


@celeryd_init.connect
def _size_the_worker(sender: str | None = None, conf: Any = None, instance: Any = None, **_: Any) -> None:
    """In a worker (not in Flower or the API): the farm's logging from the start (the model loads before Celery
    would set up its own), two Celery threads per batch slot (live and bulk); remember the node name."""
    _farm_logging()
    if instance is not None and get_settings().LOG_FORMAT == "json":
        instance.quiet = True  # no banner: a log collector reading JSON lines gets nothing but JSON lines
    import torch

    from workers.runtime import runtime

    if conf is not None:
        conf.worker_concurrency = 2 * max_batch(get_settings(), torch.cuda.is_available())
    if sender:
        runtime.node_name = sender
