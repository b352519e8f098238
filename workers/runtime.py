"""The worker process's runtime: the model it loaded once, and the parts that serve it, wired together.

A worker process (Celery's threads pool) loads the model once and runs one `BatchScheduler` on its own
thread; each Celery task thread hands its segment to that scheduler (see `workers.synthesis`). Beside it, each on
a thread of its own and each in its own module:

* the heartbeat (`workers.leases`) renews the leases of the segments the process runs and publishes the worker
  to the registry;
* the reaper (`workers.reaper`) hands on the work that fell through: expired leases, unsent segments, stalled jobs;
* the voice-control listener (`workers.voice_control`) applies the API's cache clears and evictions;
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

from shared import metrics, registry
from shared.priority import Priority
from shared.redis_client import get_redis
from shared.settings import get_settings
from voices_store.cache import VoiceCache
from workers.batch_size import max_batch
from workers.engine import XttsEngine
from workers.intake import Intake
from workers.leases import Heartbeat, LeaseBook
from workers.metrics import WorkerMetrics
from workers.model_source import ModelSource
from workers.reaper import Reaper
from workers.scheduler import BatchScheduler
from workers.studio import StudioSpeakers
from workers.synthesis import Workshop
from workers.voice_control import VoiceControl
from workers.voices import saved_voice

log = logging.getLogger(__name__)


class WorkerRuntime:
    def __init__(self) -> None:
        self.node_name = socket.gethostname()
        self.engine: XttsEngine | None = None
        self.scheduler: BatchScheduler | None = None
        self.studio: StudioSpeakers | None = None
        self.reaper: Reaper | None = None
        settings = get_settings()
        self.voices = VoiceControl(
            VoiceCache(settings.SPEAKER_CACHE_MAX_SIZE, settings.SPEAKER_CACHE_TTL), self.publish_quietly
        )
        self.leases = LeaseBook()
        self.intake = Intake(max_batch(settings, cuda=False))  # sized again once the model's device is known
        self.heartbeat = Heartbeat(self.leases, self.publish_quietly, settings)
        self.metrics = WorkerMetrics(self.info)
        self.started_at = time.time()
        self._current: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.shutting_down = threading.Event()

    @property
    def name(self) -> str:
        return f"{self.node_name}/{os.getpid()}"

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self, celery: Celery, source: ModelSource) -> None:
        """Load the model from `source` (already resolved: `workers.tasks` does it once, first) and start the
        scheduler and the background threads."""
        settings = get_settings()
        self.engine = XttsEngine.load(settings, source)
        self.scheduler = self.engine.new_scheduler(max_batch(settings, self.engine.device.startswith("cuda")))
        self.scheduler.capacity.pinned = settings.WORKER_LIVE_CAPACITY or None
        self.intake.max_batch = self.scheduler.max_batch
        self.intake.live_capacity = self.scheduler.capacity.live_capacity
        studio = self.studio = StudioSpeakers.of(self.engine)
        reaper = self.reaper = Reaper(celery, self.name)
        self.started_at = time.time()
        self._stop.clear()
        self.voices.start()
        self._preload_voices()
        self.publish()
        threads: dict[str, Callable[[], None]] = {
            "batch-scheduler": self.scheduler.run,
            "heartbeat": lambda: self.heartbeat.run(self._stop),
            "voice-control": lambda: self.voices.listen(self._stop),
            "reaper": lambda: reaper.run(self._stop),
            "studio-speakers": lambda: studio.keep_published(get_redis(), self._stop),
        }
        for name, target in threads.items():
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
            self.voices.cache,
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
                saved_voice(self.engine, self.voices.cache, voice_id)
                log.info("preloaded voice %s", voice_id)
            except Exception as exc:  # a missing voice must not keep the worker from serving the rest
                log.warning("cannot preload voice %s: %s", voice_id, exc)

    # --- what the worker is doing --------------------------------------------------------------------
    def working_on(self, key: str, job_id: str | None, segment: int | None = None) -> None:
        """Show in the registry what this process works on (job_id None: done with `key`). The heartbeat
        thread publishes it at once, off the task's hot path."""
        with self._lock:
            if job_id is None:
                self._current.pop(key, None)
            else:
                self._current[key] = {"job_id": job_id, "segment": segment}
        self.heartbeat.changed()

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
                "paused": scheduler.paused,
                "pauses": scheduler.pauses,
                **scheduler.capacity.snapshot(),
                "steps": scheduler.steps,
                "sequence_steps": scheduler.sequence_steps,
            }
            if scheduler
            else None,
            "cache": {**self.voices.cache.snapshot(), "generation": self.voices.generation},
            "held": {priority.value: self.intake.held(priority) for priority in Priority},
        }

    def publish(self) -> None:
        self.intake.refresh()  # with each heartbeat: the live capacity is measured as the worker runs
        r = get_redis()
        registry.publish(r, self.name, self.info(), ttl=3 * get_settings().WORKER_HEARTBEAT_SECONDS)
        metrics.publish_worker(r, self.name, self.metrics.snapshot())

    def publish_quietly(self) -> None:
        try:
            self.publish()
        except Exception:
            log.warning("registry update failed", exc_info=True)


runtime = WorkerRuntime()
