"""Per-process worker state: the loaded engine and the registry heartbeat.

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

from shared import registry
from shared.redis_client import get_redis
from shared.settings import get_settings
from workers.engine import XttsEngine

log = logging.getLogger(__name__)


class WorkerRuntime:
    def __init__(self) -> None:
        self.node_name = socket.gethostname()
        self.engine: XttsEngine | None = None
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.extra_info: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return f"{self.node_name}/{os.getpid()}"

    def get_engine(self) -> XttsEngine:
        """The process's engine, loading it on first use (pools without worker_process_init)."""
        if self.engine is None:
            with self._lock:
                if self.engine is None:
                    self.start()
        assert self.engine is not None
        return self.engine

    def start(self) -> None:
        settings = get_settings()
        self.engine = XttsEngine.load(settings)
        self.started_at = time.time()
        self._stop.clear()
        self.publish()
        self._heartbeat = threading.Thread(target=self._beat, name="registry-heartbeat", daemon=True)
        self._heartbeat.start()

    def info(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "name": self.name, "node": self.node_name, "pid": os.getpid(),
            "started_at": self.started_at, "heartbeat_at": time.time(),
            "model": engine.info() if engine else None,
            "languages": engine.languages if engine else [],
            "speakers": engine.speaker_names if engine else [],
            **self.extra_info,
        }

    def set_current(self, job_id: str | None, segment: int | None = None) -> None:
        """Show in the registry what this process is synthesizing (None when idle)."""
        self.extra_info["current"] = {"job_id": job_id, "segment": segment} if job_id else None
        try:
            self.publish()
        except Exception:
            log.warning("registry update failed", exc_info=True)

    def publish(self) -> None:
        settings = get_settings()
        registry.publish(get_redis(), self.name, self.info(), ttl=3 * settings.WORKER_HEARTBEAT_SECONDS)

    def _beat(self) -> None:
        interval = get_settings().WORKER_HEARTBEAT_SECONDS
        while not self._stop.wait(interval):
            try:
                self.publish()
            except Exception:  # Redis away: the entry lapses, which is the truth; try again next beat
                log.warning("registry heartbeat failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        try:
            registry.remove(get_redis(), self.name)
        except Exception:
            log.debug("could not remove registry entry", exc_info=True)


runtime = WorkerRuntime()
