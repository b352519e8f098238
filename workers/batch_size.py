"""How many segments one worker process synthesizes at once: the size of its batch, and so of its Celery threads
pool (one thread per batch slot). Its own module: the Celery application sizes the pool before the model loads,
and the runtime sizes the scheduler after."""

from __future__ import annotations

from shared.settings import Settings

CPU_MAX_BATCH, GPU_MAX_BATCH = 4, 32


def max_batch(settings: Settings, cuda: bool) -> int:
    """WORKER_MAX_BATCH, or the measured default for the device (see docs/performance.md)."""
    if settings.WORKER_MAX_BATCH:
        return settings.WORKER_MAX_BATCH
    return GPU_MAX_BATCH if cuda and not settings.USE_CPU else CPU_MAX_BATCH
