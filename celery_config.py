"""Celery configuration shared by the API (which only sends tasks, by name) and the workers, built from the
farm's settings object."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu import Queue

from shared.redis_client import sentinel_auth
from shared.settings import Settings
from shared.tasks import BLEND_VOICE, BULK_QUEUE, CLONE_VOICE, SYNTHESIS_QUEUE, VOICES_QUEUE


def redis_url(settings: Settings) -> str:
    """The broker's and result backend's URL: REDIS_URL, or with REDIS_SENTINELS one `sentinel://` URL per
    sentinel (kombu's and Celery's Sentinel transports), each with REDIS_URL's password and database."""
    if not settings.redis_sentinels:
        return settings.REDIS_URL
    url = urlsplit(settings.REDIS_URL)
    auth = url.netloc.rpartition("@")[0]  # user and password as REDIS_URL writes them (quoted)
    auth += "@" if auth else ""
    database = url.path.strip("/") or "0"
    return ";".join(f"sentinel://{auth}{host}:{port}/{database}" for host, port in settings.redis_sentinels)


def celery_config(settings: Settings) -> dict[str, Any]:
    sentinel: dict[str, Any] = {}
    if settings.redis_sentinels:
        sentinel = {"master_name": settings.REDIS_SENTINEL_MASTER, "sentinel_kwargs": sentinel_auth(settings)}
    return {
        "broker_url": redis_url(settings),
        "result_backend": redis_url(settings),
        "result_backend_transport_options": sentinel,
        "broker_connection_retry_on_startup": True,
        # A task whose message Redis still holds is redelivered after this long if its worker vanished without
        # acknowledging it (a killed machine); a crashed worker *process* is noticed at once (reject_on_worker_lost).
        # Queues are emptied in the order of task_queues ("priority": kombu's Redis transport BRPOPs them in that
        # order), not alternately: clone requests first (short, a user waits), then live synthesis, then bulk.
        "broker_transport_options": {"visibility_timeout": 3600, "queue_order_strategy": "priority", **sentinel},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # SQL holds job state; only cloning returns a result
        "result_expires": 3600,
        # Acknowledge after the task ran, and requeue when the worker process dies: a crash mid-segment is retried
        # (the segment resumes after the audio chunks it had already streamed).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A worker holds no task it has no thread for: a long job's waiting segments stay in the shared queue, where
        # any idle worker (or a short job's segment queued ahead of them) gets the next turn. Once a worker is ready
        # its intake lowers that count to what it can run well (workers/intake.py: its live capacity).
        "worker_prefetch_multiplier": 1,
        # Workers consume the three queues in this order, so a clone request is not stuck behind a backlog of
        # synthesis segments, nor a live segment behind bulk ones (shared/priority.py).
        "task_default_queue": SYNTHESIS_QUEUE,
        "task_queues": (Queue(VOICES_QUEUE), Queue(SYNTHESIS_QUEUE), Queue(BULK_QUEUE)),
        "task_routes": {CLONE_VOICE: {"queue": VOICES_QUEUE}, BLEND_VOICE: {"queue": VOICES_QUEUE}},
        # A worker that loses the broker stops its running tasks (their leases lapse and the reaper hands the
        # segments to a worker that can still acknowledge them) instead of finishing work it cannot acknowledge.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Events for Flower.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
    }
