"""The workers' Celery application: `celery -A workers.celery_app worker`.

A worker process is one model with one batch scheduler, so it runs Celery's threads pool with one thread per
batch slot: it takes a task only when it has a free slot (prefetch multiplier 1, late acknowledgement), and no
worker holds work it cannot start. Run one such process per GPU.
"""

from __future__ import annotations

import torch
from celery import Celery

from celery_config import celery_config
from shared.settings import get_settings
from workers.runtime import max_batch

_settings = get_settings()
celery_app = Celery("xtts_farm", include=["workers.tasks"])
celery_app.conf.update(celery_config(_settings))
celery_app.conf.update(
    worker_pool="threads",
    worker_concurrency=max_batch(_settings, torch.cuda.is_available()),
)
app = celery_app  # the name `celery -A workers.celery_app` looks for
