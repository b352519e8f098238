"""How many segments one worker process synthesizes at once: the size of its batch, and so of its Celery threads
pool (one thread per batch slot). Its own module: the Celery application sizes the pool before the model loads,
and the runtime sizes the scheduler after."""

from __future__ import annotations

from shared.settings import Settings

# The CPU default was measured (docs/performance.md, "Concurrency": on 2 cores the aggregate peaks at 4 streams).
# The GPU default was NOT measured: no GPU has run this code yet. 32 is a guess from the GPT's batching headroom;
# `scripts/gpu_check.sh` measures 1 to 64 streams on a GPU, and its results should replace it.
CPU_MAX_BATCH, GPU_MAX_BATCH = 4, 32


def max_batch(settings: Settings, cuda: bool) -> int:
    """WORKER_MAX_BATCH, or the default for the device (measured on CPUs, a guess on GPUs: see above)."""
    if settings.WORKER_MAX_BATCH:
        return settings.WORKER_MAX_BATCH
    return GPU_MAX_BATCH if cuda and not settings.USE_CPU else CPU_MAX_BATCH
