"""What the farm offers and how it is: languages, built-in speakers, health."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel


class LanguagesResponse(RootModel[list[str]]):
    """The language codes, a bare list as coqui's official XTTS server answers (its clients and demo read it so).
    The `X-Languages-Source` header says where the list comes from: `workers` (what the live workers' model speaks) or
    `xtts_v2` (XTTS-v2's list, while no worker is up)."""


class SpeakersResponse(BaseModel):
    speakers: list[str]


class StudioSpeaker(BaseModel):
    speaker_embedding: list[float] = Field(..., description="[512]")
    gpt_cond_latent: list[list[float]] = Field(..., description="[32, width] (width 1024 for XTTS-v2)")


class StudioSpeakers(RootModel[dict[str, StudioSpeaker]]):
    """Each built-in speaker's name and latents, in the official XTTS server's shape: send them back to /tts or
    /tts_stream at the top level of the body."""


class RequestSlots(BaseModel):
    """MAX_CONCURRENT_REQUESTS in the API process that answered."""

    limit: int
    in_use: int = Field(..., description="Synthesis responses being served")
    waiting: int = Field(..., description="Requests waiting for their turn")


class HealthResponse(BaseModel):
    status: Literal["ok", "no_workers", "unavailable"] = Field(
        ..., description="ok; no_workers (the API, Redis and the database answer, no worker is up); unavailable"
    )
    reason: str | None = Field(None, description="Why the status is not ok, in words")
    api: str
    redis: dict[str, Any]
    database: dict[str, Any]
    live_workers: int = Field(..., description="Synthesis worker processes alive")
    live_streams: int = Field(0, description="Live segments the workers hold now (a listener waits for each)")
    live_capacity: int | None = Field(
        None,
        description="Live streams the workers carry faster than real time, the sum of each one's measured "
        "capacity (none while a live worker has not measured it yet)",
    )
    backlog_audio_seconds: dict[str, float] | None = Field(
        None,
        description="About how many seconds of audio the active jobs still have to make, by class (live, bulk): "
        "the text of their unfinished segments as XTTS speaks it (none while the database does not answer)",
    )
    stall_seconds: dict[str, float] | None = Field(
        None,
        description="Seconds listeners heard silence after their first audio, by class, since Redis started: audio "
        "that reached the API after the playback clock of what it had sent ran out",
    )
    deadline_misses: dict[str, int] | None = Field(
        None, description="Chunks that reached the API after the playback clock ran out, by class (the same count)"
    )
    workers: list[dict[str, Any]] | None = Field(
        None, description="Each live worker, its model and what it is doing (operators only: an admin key)"
    )
    requests: RequestSlots | None = Field(None, description="This API process's slots (operators only)")
