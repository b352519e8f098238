"""The workers' Celery application: `celery -A workers.celery_app worker`.

A worker process is one model with one batch scheduler, so it runs Celery's threads pool with one thread per
batch slot: it takes a task only when it has a free slot (prefetch multiplier 1, late acknowledgement), and no
worker holds work it cannot start. Run one such process per GPU. (This module stays light: Flower loads it too.)
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import celeryd_init

from celery_config import celery_config
from shared.settings import Settings, get_settings

CPU_MAX_BATCH, GPU_MAX_BATCH = 4, 32

celery_app = Celery("xtts_farm", include=["workers.tasks"])
celery_app.conf.update(
    celery_config(get_settings()),
    worker_pool="threads",
    broker_transport="workers.broker:Transport",  # see workers/broker.py
)
app = celery_app  # the name `celery -A workers.celery_app` looks for


def max_batch(settings: Settings, cuda: bool) -> int:
    """WORKER_MAX_BATCH, or the measured default for the device (see docs/performance.md)."""
    if settings.WORKER_MAX_BATCH:
        return settings.WORKER_MAX_BATCH
    return GPU_MAX_BATCH if cuda and not settings.USE_CPU else CPU_MAX_BATCH


@celeryd_init.connect
def _size_the_worker(sender: str | None = None, conf: Any = None, **_: Any) -> None:
    """In a worker (not in Flower or the API): one Celery thread per batch slot; remember the node name."""
    import torch

    from workers.runtime import runtime

    if conf is not None:
        conf.worker_concurrency = max_batch(get_settings(), torch.cuda.is_available())
    if sender:
        runtime.node_name = sender
