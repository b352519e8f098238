"""The farm's one settings object, read from the environment in this one place.

Variable names follow the seed document (PORT, DEBUG, NUM_THREADS, CUSTOM_MODEL_PATH, ...);
the farm adds what a distributed deployment needs (REDIS_URL, DATABASE_URL, XTTS_MODEL, ...).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)

    # --- seed settings -------------------------------------------------------------------------
    PORT: int = 8000
    DEBUG: bool = False
    NUM_THREADS: int = Field(default_factory=lambda: os.cpu_count() or 1)
    MAX_CONCURRENT_REQUESTS: int = 10
    CUSTOM_MODEL_PATH: str | None = None
    USE_CPU: bool = False
    SPEAKER_CACHE_TTL: int = 3600
    SPEAKER_CACHE_MAX_SIZE: int = 100
    PRELOAD_VOICES: str = ""
    VOICES_DIR: str = str(PROJECT_ROOT / "saved_voices")

    # --- services ------------------------------------------------------------------------------
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    DATABASE_URL: str = f"sqlite:///{PROJECT_ROOT / 'data' / 'xtts.db'}"

    # --- model ---------------------------------------------------------------------------------
    # xtts_v2 (official weights through coqui's downloader), dev (random-weight checkpoint the
    # project generates), or ignored when CUSTOM_MODEL_PATH names a checkpoint directory.
    XTTS_MODEL: str = "xtts_v2"
    COQUI_TOS_AGREED: bool = False
    MODEL_DIR: str = str(PROJECT_ROOT / "models")
    # float16 halves memory and speeds up a GPU; ignored on the CPU.
    USE_FP16: bool = False

    # --- synthesis limits ----------------------------------------------------------------------
    MAX_TEXT_CHARS: int = 100_000
    DEFAULT_STREAM_CHUNK_SIZE: int = 20
    # Audio-token window the worker decodes per streamed chunk, after the first (see issue 5).
    STREAM_DECODE_CONTEXT: int = 8

    # --- jobs and streams ----------------------------------------------------------------------
    STREAM_TTL_SECONDS: int = 3600
    STREAM_MAXLEN: int = 2000
    STREAM_READ_BLOCK_MS: int = 1000
    # How long a streaming response waits for a job that makes no progress before giving up.
    STREAM_IDLE_TIMEOUT_SECONDS: int = 600
    CHUNK_MAX_RETRIES: int = 2
    # Chunks of one job allowed in the queue or running at once; 0 means "one per live worker".
    JOB_MAX_INFLIGHT_CHUNKS: int = 0

    # --- workers -------------------------------------------------------------------------------
    WORKER_HEARTBEAT_SECONDS: int = 5
    WORKER_MODEL_LOAD_TIMEOUT: int = 600

    # --- voices --------------------------------------------------------------------------------
    MAX_UPLOAD_MB: int = 20
    MAX_REFERENCE_SECONDS: float = 60.0
    CLONE_TIMEOUT_SECONDS: int = 120

    FLOWER_PORT: int = 5555

    @field_validator("CUSTOM_MODEL_PATH", mode="before")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def preload_voices(self) -> list[str]:
        return [v.strip() for v in self.PRELOAD_VOICES.split(",") if v.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
