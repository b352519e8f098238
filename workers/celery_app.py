"""The workers' Celery application: `celery -A workers.celery_app worker`."""

from __future__ import annotations

from celery import Celery

from celery_config import celery_config
from shared.settings import get_settings

celery_app = Celery("xtts_farm", include=["workers.tasks"])
celery_app.conf.update(celery_config(get_settings()))
app = celery_app  # the name `celery -A workers.celery_app` looks for
