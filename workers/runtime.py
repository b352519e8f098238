"""Per-process worker state: the model, its batch scheduler, the voice cache, leases, and the background loops.

A worker process (Celery's threads pool) loads the model once and runs one `BatchScheduler` on its own
thread; each Celery task thread hands its segment to that scheduler (see `workers.synthesis`). Beside it:

* the heartbeat publishes the worker to the registry and renews the leases of the segments it runs;
* the reaper (every worker runs one; a Redis lock lets one of them work at a time) gives segments whose lease
  expired to other workers, sends segments that were claimed but never reached the broker (and retries whose
  backoff is over), and dispatches jobs whose next segment nobody enqueued;
* the voice-control listener applies cache clears and evictions sent by the API;
* the built-in speakers' latents are published for GET /studio_speakers (`workers.studio`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from shared import jobs, metrics, registry, streams, voice_control
from shared.dispatch import dispatch, send_segment
from shared.redis_client import get_redis
from shared.settings import get_settings
from voices_store.cache import VoiceCache
from workers.celery_app import max_batch
from workers.engine import VoiceLatents, XttsEngine
from workers.metrics import WorkerMetrics
from workers.scheduler import BatchScheduler
from workers.studio import StudioSpeakers
from workers.synthesis import Workshop
from workers.voices import is_voice, saved_voice

log = logging.getLogger(__name__)

REAPER_LOCK = "xtts:reaper"


class LeaseBook:
    """The runs whose leases this worker renews, and those that lost theirs (another run took over)."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, run: str) -> None:
        with self._lock:
            self._held.add(run)

    def release(self, run: str) -> None:
        with self._lock:
            self._held.discard(run)
            self._lost.discard(run)

    def lost(self, run: str) -> bool:
        with self._lock:
            return run in self._lost

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held - self._lost)

    def renew(self, lease_seconds: float) -> None:
        runs = self.held()
        still = jobs.renew_leases(runs, lease_seconds)
        with self._lock:
            self._lost |= set(runs) - still


class WorkerRuntime:
    def __init__(self) -> None:
        self.node_name = socket.gethostname()
        self.engine: XttsEngine | None = None
        self.scheduler: BatchScheduler | None = None
        self.celery: Celery | None = None
        self.studio: StudioSpeakers | None = None
        settings = get_settings()
        self.voice_cache: VoiceCache[VoiceLatents] = VoiceCache(
            settings.SPEAKER_CACHE_MAX_SIZE, settings.SPEAKER_CACHE_TTL
        )
        self.leases = LeaseBook()
        self.metrics = WorkerMetrics(self.info)
        self.cache_generation = 0
        self.started_at = time.time()
        self._current: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()
        self.shutting_down = threading.Event()

    @property
    def name(self) -> str:
        return f"{self.node_name}/{os.getpid()}"

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self, celery: Celery) -> None:
        settings = get_settings()
        self.celery = celery
        self.engine = XttsEngine.load(settings)
        self.scheduler = self.engine.new_scheduler(max_batch(settings, self.engine.device.startswith("cuda")))
        self.studio = StudioSpeakers.of(self.engine)
        self.started_at = time.time()
        self._stop.clear()
        self.cache_generation = voice_control.current_generation(get_redis())
        self._preload_voices()
        self.publish()
        for target, name in (
            (self.scheduler.run, "batch-scheduler"),
            (self._beat, "heartbeat"),
            (self._listen, "voice-control"),
            (self._reap_forever, "reaper"),
            (self._publish_studio_speakers, "studio-speakers"),
        ):
            threading.Thread(target=target, name=name, daemon=True).start()
        log.info("worker %s serves up to %d segments at once", self.name, self.scheduler.max_batch)

    def begin_shutdown(self) -> None:
        """SIGTERM: running segments are handed back at their next chunk (another worker resumes them at once),
        and Celery's warm shutdown, which waits for the task threads, is then quick."""
        self.shutting_down.set()
        log.info("worker %s shutting down: handing its %d running segments back", self.name, len(self.leases.held()))

    def stop(self) -> None:
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        try:
            # The last figures since the heartbeat: they stay in the farm's totals after this worker is gone.
            metrics.publish_worker(get_redis(), self.name, self.metrics.snapshot())
            registry.remove(get_redis(), self.name)
        except Exception:
            log.debug("could not remove registry entry", exc_info=True)

    def workshop(self) -> Workshop:
        if self.engine is None or self.scheduler is None:
            raise RuntimeError("the worker runtime has not started (no model loaded)")
        return Workshop(
            self.engine,
            self.scheduler,
            self.voice_cache,
            self.leases,
            get_settings(),
            self.name,
            self.shutting_down,
            self.metrics,
        )

    def _preload_voices(self) -> None:
        assert self.engine is not None
        for voice_id in get_settings().preload_voices:
            try:
                saved_voice(self.engine, self.voice_cache, voice_id)
                log.info("preloaded voice %s", voice_id)
            except Exception as exc:  # a missing voice must not keep the worker from serving the rest
                log.warning("cannot preload voice %s: %s", voice_id, exc)

    # --- voice cache ---------------------------------------------------------------------------------
    def sync_voice_cache(self) -> None:
        """Clear the cache if a clear was requested since we last looked (a missed message included)."""
        generation = voice_control.current_generation(get_redis())
        if generation > self.cache_generation:
            self._clear(generation)

    def _clear(self, generation: int) -> None:
        self.voice_cache.clear()
        self.cache_generation = max(self.cache_generation, generation)
        log.info("voice cache cleared (generation %d)", self.cache_generation)
        self.publish_quietly()

    def _handle(self, message: str) -> None:
        kind, _, arg = message.partition(":")
        if kind == "clear":
            self._clear(int(arg))
        elif kind == "evict" and self.voice_cache.invalidate(is_voice(arg)):
            self.publish_quietly()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(voice_control.CHANNEL)
                self.sync_voice_cache()  # anything sent while we were not subscribed
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self._handle(message["data"].decode())
            except Exception:  # Redis away: resubscribe after a pause
                log.warning("voice control listener lost Redis; retrying", exc_info=True)
                self._stop.wait(1.0)

    # --- what the worker is doing --------------------------------------------------------------------
    def working_on(self, key: str, job_id: str | None, segment: int | None = None) -> None:
        """Show in the registry what this process works on (job_id None: done with `key`). The heartbeat
        thread publishes it at once, off the task's hot path."""
        with self._lock:
            if job_id is None:
                self._current.pop(key, None)
            else:
                self._current[key] = {"job_id": job_id, "segment": segment}
        self._changed.set()

    def info(self) -> dict[str, Any]:
        engine, scheduler = self.engine, self.scheduler
        with self._lock:
            current = sorted(self._current.values(), key=lambda c: (str(c["job_id"]), c["segment"] or 0))
        return {
            "name": self.name,
            "node": self.node_name,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "model": engine.info() if engine else None,
            "gpt_width": engine.gpt_width if engine else None,
            "languages": engine.languages if engine else [],
            "speakers": engine.speaker_names if engine else [],
            "studio_speakers": self.studio.digest if self.studio else None,
            "current": current,
            "batch": {
                "max": scheduler.max_batch,
                "active": scheduler.active,
                "steps": scheduler.steps,
                "sequence_steps": scheduler.sequence_steps,
            }
            if scheduler
            else None,
            "cache": {**self.voice_cache.snapshot(), "generation": self.cache_generation},
        }

    def publish(self) -> None:
        r = get_redis()
        registry.publish(r, self.name, self.info(), ttl=3 * get_settings().WORKER_HEARTBEAT_SECONDS)
        metrics.publish_worker(r, self.name, self.metrics.snapshot())

    def publish_quietly(self) -> None:
        try:
            self.publish()
        except Exception:
            log.warning("registry update failed", exc_info=True)

    # --- background loops ----------------------------------------------------------------------------
    def _beat(self) -> None:
        settings = get_settings()
        renew_every = settings.SEGMENT_LEASE_SECONDS / 3
        last_publish = last_renew = 0.0
        while not self._stop.is_set():
            self._changed.wait(min(renew_every, settings.WORKER_HEARTBEAT_SECONDS))
            changed = self._changed.is_set()
            self._changed.clear()
            now = time.monotonic()
            if now - last_renew >= renew_every:
                self._quietly(lambda: self.leases.renew(settings.SEGMENT_LEASE_SECONDS), "lease renewal")
                last_renew = now
            if changed or now - last_publish >= settings.WORKER_HEARTBEAT_SECONDS:
                self.publish_quietly()
                last_publish = now

    def _publish_studio_speakers(self) -> None:
        assert self.studio is not None
        self.studio.keep_published(get_redis(), self._stop)

    def _reap_forever(self) -> None:
        interval = get_settings().REAPER_INTERVAL_SECONDS
        while not self._stop.wait(interval):
            self._quietly(self.reap_once, "reaper")

    def reap_once(self) -> None:
        """One pass of the reaper, if no other worker is running one right now."""
        settings, r = get_settings(), get_redis()
        if not r.set(REAPER_LOCK, self.name, nx=True, px=int(settings.REAPER_INTERVAL_SECONDS * 1000)):
            return
        assert self.celery is not None
        reaped = jobs.reap(settings.SEGMENT_MAX_RETRIES + 1)
        for job_id, index in reaped.requeued:
            log.warning("segment %s/%d lost its worker (lease expired): handing it to another", job_id, index)
        for job_id, index in reaped.failed:
            log.warning("segment %s/%d lost its worker too often: job failed", job_id, index)
            streams.publish_stop(r, job_id, settings.STREAM_TTL_SECONDS)
        for job_id, index in [*reaped.requeued, *reaped.due]:
            send_segment(self.celery, job_id, index)
        live = len(registry.live_workers(r))
        for job_id in jobs.stalled_jobs():
            dispatch(self.celery, job_id, live)

    @staticmethod
    def _quietly(action: Callable[[], None], what: str) -> None:
        try:
            action()
        except Exception:  # a database or Redis hiccup: the next round tries again
            log.warning("%s failed; retrying at the next round", what, exc_info=True)


runtime = WorkerRuntime()
