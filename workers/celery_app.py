"""The workers' Celery application: `celery -A workers.celery_app worker`."""

from __future__ import annotations

from celery import Celery

celery_app = Celery("xtts_farm", include=["workers.tasks"])
celery_app.config_from_object("celery_config")
app = celery_app  # the name `celery -A workers.celery_app` looks for
