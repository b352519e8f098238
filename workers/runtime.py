"""Per-process worker state: the loaded engine, the voice cache, and the registry heartbeat.

The model is loaded in the process that uses it (a prefork child, in `worker_process_init`), never in
a parent that forks: CUDA cannot cross a fork, and each child would otherwise copy-on-write the weights.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from shared import registry, voice_control
from shared.redis_client import get_redis
from shared.settings import get_settings
from voices_store.cache import VoiceCache
from workers.engine import VoiceLatents, XttsEngine
from workers.voices import is_voice, saved_voice

log = logging.getLogger(__name__)


class WorkerRuntime:
    def __init__(self) -> None:
        self.node_name = socket.gethostname()
        self.engine: XttsEngine | None = None
        settings = get_settings()
        self.voice_cache: VoiceCache[VoiceLatents] = VoiceCache(
            settings.SPEAKER_CACHE_MAX_SIZE, settings.SPEAKER_CACHE_TTL
        )
        self.cache_generation = 0
        self.started_at = time.time()
        self.current: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()

    @property
    def name(self) -> str:
        return f"{self.node_name}/{os.getpid()}"

    # --- lifecycle -------------------------------------------------------------------------------------
    def get_engine(self) -> XttsEngine:
        """The process's engine, loading it on first use (pools without worker_process_init)."""
        if self.engine is None:
            with self._lock:
                if self.engine is None:
                    self.start()
        assert self.engine is not None
        return self.engine

    def start(self) -> None:
        self.engine = XttsEngine.load(get_settings())
        self.started_at = time.time()
        self._stop.clear()
        self.cache_generation = voice_control.current_generation(get_redis())
        self._preload_voices()
        self.publish()
        threading.Thread(target=self._beat, name="registry-heartbeat", daemon=True).start()
        threading.Thread(target=self._listen, name="voice-control", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        try:
            registry.remove(get_redis(), self.name)
        except Exception:
            log.debug("could not remove registry entry", exc_info=True)

    def _preload_voices(self) -> None:
        for voice_id in get_settings().preload_voices:
            try:
                saved_voice(self.get_engine(), self.voice_cache, voice_id)
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

    # --- registry ------------------------------------------------------------------------------------
    def set_current(self, job_id: str | None, segment: int | None = None) -> None:
        """Show in the registry what this process is working on (None when idle). The heartbeat thread
        publishes it at once, off the task's hot path."""
        self.current = {"job_id": job_id, "segment": segment} if job_id else None
        self._changed.set()

    def info(self) -> dict[str, Any]:
        engine = self.engine
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
            "current": self.current,
            "cache": {**self.voice_cache.snapshot(), "generation": self.cache_generation},
        }

    def publish(self) -> None:
        registry.publish(get_redis(), self.name, self.info(), ttl=3 * get_settings().WORKER_HEARTBEAT_SECONDS)

    def publish_quietly(self) -> None:
        try:
            self.publish()
        except Exception:
            log.warning("registry update failed", exc_info=True)

    def _beat(self) -> None:
        interval = get_settings().WORKER_HEARTBEAT_SECONDS
        while not self._stop.is_set():
            self._changed.wait(interval)
            self._changed.clear()
            self.publish_quietly()


runtime = WorkerRuntime()
