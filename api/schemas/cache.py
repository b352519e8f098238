"""The workers' voice caches: their counters, and what clearing them reached."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CacheCounters(BaseModel):
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    size: int = 0


class WorkerCacheStats(CacheCounters):
    model_config = ConfigDict(extra="allow")

    worker: str


class CacheTotals(CacheCounters):
    hit_rate: float | None = Field(..., description="hits / (hits + misses), null before any lookup")


class CacheStats(BaseModel):
    workers: list[WorkerCacheStats]
    total: CacheTotals


class CacheCleared(BaseModel):
    generation: int = Field(..., description="The cache generation every worker must reach")
    cleared: list[str] = Field(..., description="Workers that cleared their cache")
    pending: list[str] = Field(
        ..., description="Live workers that had not confirmed yet (they clear before their next lookup)"
    )
