"""Celery tasks. They carry ids only; text and settings come from SQL, audio goes out through Redis."""

from __future__ import annotations

import logging
from typing import Any

import torch
from celery import Task
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from shared import jobs, logs, registry, streams
from shared.dispatch import dispatch, send_segment
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.tasks import BLEND_VOICE, CLONE_VOICE, SYNTHESIZE_SEGMENT
from voices_store import staging, store
from voices_store.latents import Latents
from voices_store.uploads import CLONE_SAMPLE_RATE
from workers import cloning, devices, model_source, voices
from workers.celery_app import celery_app
from workers.errors import ModelUnavailable
from workers.intake import priority_of_queue
from workers.runtime import runtime
from workers.synthesis import Outcome, run_segment

log = logging.getLogger(__name__)


@worker_init.connect
def _load_model(**_: Any) -> None:
    """Before the worker consumes anything: refuse a GPU the host shows but torch cannot use (workers/devices.py),
    get the checkpoint (download or generate it, or stop with a one-line reason), load the model once, start the
    batch scheduler and the background loops. The threads pool never forks, so CUDA is initialised in the process
    that uses it."""
    refusal = devices.unusable_gpu(get_settings(), torch.cuda.is_available(), torch.__version__, torch.version.cuda)
    if refusal:
        log.critical("worker cannot start: %s", refusal)
        raise SystemExit(1)
    try:
        source = model_source.resolve(get_settings())
    except ModelUnavailable as exc:
        log.critical("worker cannot start: %s", exc)
        raise SystemExit(1) from None
    runtime.start(celery_app, source)
    lost = jobs.fail_lost_jobs(streams.current_epoch(get_redis()))
    if lost:
        log.warning("marked %d jobs failed: they were queued before Redis lost its data", lost)


@worker_ready.connect
def _attach_intake(sender: Any = None, **_: Any) -> None:
    """The consumer exists now: from here on the worker picks its queues by what it holds (workers/intake.py)."""
    if sender is not None:
        runtime.intake.attach(sender)


@worker_shutting_down.connect
def _hand_back(**_: Any) -> None:
    runtime.begin_shutdown()


@worker_shutdown.connect
def _unregister(**_: Any) -> None:
    runtime.stop()


@task_prerun.connect
def _bind_log_context(task: Task | None = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    """Every line of a synthesis task names its job, Celery's own ("... succeeded in 0.5 s") included: bound
    before the task runs, cleared after Celery logged its outcome."""
    logs.clear()
    if task is not None and task.name == SYNTHESIZE_SEGMENT:
        job_id = (kwargs or {}).get("job_id") or (args[0] if args else None)
        logs.bind(job_id=str(job_id) if job_id else None)


@task_postrun.connect
def _clear_log_context(**_: Any) -> None:
    logs.clear()


@celery_app.task(bind=True, name=SYNTHESIZE_SEGMENT)
def synthesize_segment(self: Task, job_id: str, index: int) -> str:
    key = f"{job_id}:{index}:{self.request.id}"
    priority = priority_of_queue((self.request.delivery_info or {}).get("routing_key"))
    if not runtime.intake.take(priority):
        # Untouched (no lease taken, still queued in SQL): to the back of the bulk queue, for whichever worker has
        # a free slot first.
        send_segment(celery_app, job_id, index, priority)
        return str(Outcome.HANDED_BACK.value)
    runtime.working_on(key, job_id, index)
    try:
        runtime.voices.sync()
        result = run_segment(runtime.workshop(), get_redis(), job_id, index, playing=lambda: _send_next(job_id))
        runtime.metrics.segments.labels(result.outcome.value).inc()  # before working_on publishes the figures
    finally:
        runtime.working_on(key, None)
        runtime.intake.released(priority)
    if result.outcome in (Outcome.HANDED_BACK, Outcome.RESUMED):
        try:  # straight back to the broker for another worker (else the reaper sends it within seconds)
            send_segment(celery_app, job_id, index)
        except Exception:
            log.warning("could not requeue handed-back segment %s/%d; the reaper will", job_id, index, exc_info=True)
    if result.outcome in (Outcome.DONE, Outcome.SKIPPED):
        # The job's next segment (a skipped delivery dispatches too: it may be the redelivery of a run that
        # died between finishing its segment and dispatching the next one).
        _send_next(job_id)
    return str(result.outcome.value)


def _send_next(job_id: str) -> None:
    """The job's next segments, as far as its window allows (shared/dispatch.py)."""
    dispatch(celery_app, job_id, len(registry.live_workers(get_redis())))


@celery_app.task(bind=True, name=BLEND_VOICE, ignore_result=False)
def blend_voice(
    self: Task, tenant: str, voice_id: str, ref: str, recipe: str, name: str, description: str, overwrite: bool
) -> dict[str, Any]:
    """Mix a blend's voices (shared/blends.py) and save the result as the tenant's voice, with its recipe."""
    key = f"blend:{self.request.id}"
    runtime.working_on(key, f"blend:{voice_id}")
    try:
        shop = runtime.workshop()
        mixed = voices.blended_voice(shop.engine, shop.cache, ref)
        latents = Latents(
            mixed.gpt_cond_latent.float().cpu().numpy().reshape(1, -1, shop.engine.gpt_width),
            mixed.speaker_embedding.float().cpu().numpy().reshape(1, 512, 1),
        )
        info = store.save_voice(
            tenant,
            voice_id,
            latents,
            name=name,
            description=description,
            overwrite=overwrite,
            source="blend",
            recipe=recipe,
        )
        return {"revision": info.revision}
    finally:
        runtime.working_on(key, None)


@celery_app.task(bind=True, name=CLONE_VOICE, ignore_result=False)
def clone_voice(self: Task, content_hash: str) -> dict[str, Any]:
    """Clone the reference audio the API left in Redis under `content_hash`; store the result in SQL."""
    key = f"clone:{self.request.id}"
    runtime.working_on(key, f"clone:{content_hash[:12]}")
    try:
        references = staging.fetch(get_redis(), content_hash)
        shop = runtime.workshop()
        with shop.scheduler.lock:  # the model is shared with the batch: clone between two of its steps
            latents = cloning.clone(shop.engine, references)
        seconds = sum(len(a) for a in references) / CLONE_SAMPLE_RATE
        store.put_clone_result(content_hash, shop.engine.source.name, latents, seconds)
        runtime.metrics.clones.inc()
        log.info("voice cloned from %.1f s of reference audio (content %s)", seconds, content_hash[:12])
        return {"content_hash": content_hash, "gpt_width": latents.width}
    finally:
        runtime.working_on(key, None)
