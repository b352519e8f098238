"""The farm's one settings object, read from the environment in this one place.

Variable names keep those of the single-server XTTS API this farm replaces (PORT, DEBUG, NUM_THREADS,
CUSTOM_MODEL_PATH, ...);
the farm adds what a distributed deployment needs (REDIS_URL, DATABASE_URL, XTTS_MODEL, ...).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)

    # --- the single-server API's settings --------------------------------------------------------
    PORT: int = Field(8000, ge=1, le=65535)
    # Debug logging, in the API and the workers (never Flask's debugger: it runs code for whoever can reach it).
    DEBUG: bool = False
    NUM_THREADS: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # The seed's 10 was a thread per listener; the gevent server (API_WORKER_CLASS) holds thousands of listeners
    # (docs/performance.md, fanout).
    MAX_CONCURRENT_REQUESTS: int = Field(2500, ge=1)
    CUSTOM_MODEL_PATH: str | None = None
    USE_CPU: bool = False
    # 0: a cached voice is never reused (every lookup loads it again).
    SPEAKER_CACHE_TTL: int = Field(3600, ge=0)
    # 0: no cache.
    SPEAKER_CACHE_MAX_SIZE: int = Field(100, ge=0)
    PRELOAD_VOICES: str = ""
    VOICES_DIR: str = str(PROJECT_ROOT / "saved_voices")

    # --- API process -------------------------------------------------------------------------
    # Address the API binds to (with PORT); 127.0.0.1 keeps it off the network.
    HOST: str = "0.0.0.0"
    # After SIGTERM, how long an API process lets open streams run before it ends them cleanly (listeners
    # reconnect with their cursor); gunicorn's graceful timeout leaves 10 s more.
    SHUTDOWN_GRACE_SECONDS: float = Field(20.0, ge=0)
    # Gunicorn processes serving the API (each with its own MAX_CONCURRENT_REQUESTS).
    API_PROCESSES: int = Field(1, ge=1)
    # How each API process serves its connections (gunicorn.conf.py): gevent, a greenlet per connection (thousands
    # of listeners a process); gthread, a thread per connection (2 x MAX_CONCURRENT_REQUESTS + 32 threads at most).
    API_WORKER_CLASS: Literal["gevent", "gthread"] = "gevent"
    # API keys (api/auth.py): true = needed on every endpoint but /health and the docs; false = never (a machine of
    # your own); auto (unset) = needed once any key exists in the database, and until then local clients only.
    API_KEYS_REQUIRED: bool | None = None
    # How long the API waits on a client: for its whole request body (else 408), and for each write of a response
    # to be taken (else the connection is dropped). An upload of MAX_UPLOAD_MB must arrive within it.
    CLIENT_TIMEOUT_SECONDS: float = Field(60.0, gt=0)
    # How long a synthesis request over MAX_CONCURRENT_REQUESTS waits for its turn before a 429 (at most
    # MAX_CONCURRENT_REQUESTS requests wait at once; more get the 429 at once).
    REQUEST_QUEUE_TIMEOUT_SECONDS: float = Field(30.0, ge=0)

    # text: one readable line per record; json: one JSON object per line (for log collectors). Either way, every
    # line about a job carries its job id and tenant (shared/logs.py).
    LOG_FORMAT: Literal["text", "json"] = "text"
    # What text normalisation (shared/normalization.py) does with emoji: drop them, or say their CLDR name in the
    # request's language (dropped, with a warning, in a language CLDR names none in).
    NORMALIZE_EMOJI: Literal["drop", "speak"] = "drop"

    # --- services ------------------------------------------------------------------------------
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    DATABASE_URL: str = f"sqlite:///{PROJECT_ROOT / 'data' / 'xtts.db'}"
    # Redis Sentinel: `host:port` of each sentinel, comma-separated. When set, the farm (its Redis clients and Celery's
    # broker) asks them where the master named REDIS_SENTINEL_MASTER is, and follows a failover; REDIS_URL then only
    # gives the database number and password.
    REDIS_SENTINELS: str = Field("", pattern=r"^\s*$|^[^\s,:]+:\d{1,5}(\s*,\s*[^\s,:]+:\d{1,5})*\s*$")
    REDIS_SENTINEL_MASTER: str = Field("mymaster", min_length=1, max_length=200)
    # The sentinels' own password (their `requirepass`), if they have one; the master's is REDIS_URL's.
    REDIS_SENTINEL_PASSWORD: SecretStr | None = None

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

    # --- admission control (api/admission.py) ---------------------------------------------------------------
    # Audio tokens (about 46 ms each) one request may cost, estimated from its text and min/max_new_tokens:
    # 160 000 is about 2 hours, enough for any text of MAX_TEXT_CHARS spoken at its natural length.
    MAX_TOKENS_PER_REQUEST: int = Field(160_000, ge=1)
    # Jobs (of /jobs, /tts and /tts_stream) queued or running per tenant.
    MAX_JOBS_PER_TENANT: int = Field(20, ge=1)
    # Segments not yet synthesized, all tenants together: the longest backlog the farm accepts.
    MAX_QUEUED_SEGMENTS: int = Field(10_000, ge=1)
    # How long a new live request (a listener waits) may expect to wait for a free live stream before it is refused
    # with 503 and Retry-After, from the workers' live capacity and the live work ahead of it; 0: never refused.
    MAX_LIVE_WAIT_SECONDS: float = Field(30.0, ge=0)
    # Audio tokens (about 46 ms each) in a segment's first streamed chunk when a request does not say.
    DEFAULT_STREAM_CHUNK_SIZE: int = Field(20, ge=1, le=400)
    # HiFi-GAN frames of context the streaming decoder re-decodes on each side of a span it decodes (its margin).
    # 12 reproduces one-shot decoding to float rounding (135 dB SNR); 8 gives 118 dB, 4 gives 80 dB.
    STREAM_DECODE_CONTEXT: int = Field(12, ge=1, le=64)

    # --- jobs and streams ----------------------------------------------------------------------
    STREAM_TTL_SECONDS: int = 3600
    STREAM_READ_BLOCK_MS: int = 1000
    # How long a streaming response waits for a job that makes no progress before giving up.
    STREAM_IDLE_TIMEOUT_SECONDS: int = 600
    # A voice agent's text (api/agent_contexts.py) with no sentence end yet is spoken once no more of it has come for
    # this long: an LLM writes 20 or more tokens a second, so a pause of a second means it has stopped for now.
    AGENT_IDLE_FLUSH_SECONDS: float = Field(1.0, gt=0, le=60)
    # A voice agent's open context is renewed by its API process every second; one not renewed for this long lost its
    # process, and the reaper cancels it.
    AGENT_WRITER_TTL_SECONDS: int = Field(15, ge=3, le=3600)
    # Time limits of one run of a segment: past the soft one it stops at its next chunk and fails with that
    # reason; the hard one bounds the wait for any chunk at all (a model that hangs).
    SEGMENT_SOFT_TIME_LIMIT: float = Field(600.0, gt=0)
    SEGMENT_HARD_TIME_LIMIT: float = Field(660.0, gt=0)
    # Retries of a failing segment (a piece of text, one Celery task) before its job fails.
    SEGMENT_MAX_RETRIES: int = 2
    # Segments of one job allowed in the queue or running at once; 0 means "one per live worker".
    JOB_MAX_INFLIGHT_SEGMENTS: int = 0
    # Audio of segments asked for with an explicit `seed`, kept in Redis to answer the same segment again without the
    # model (shared/result_cache.py), least recently used evicted past this size; 0: nothing is reused.
    RESULT_CACHE_MB: int = Field(256, ge=0)

    # --- workers -------------------------------------------------------------------------------
    # Segments one worker process synthesizes at once, in one continuous batch on one model (also its Celery
    # concurrency: it takes a task only when it has a free slot). 0 = by device: 4 on a CPU, 32 on a GPU.
    WORKER_MAX_BATCH: int = Field(0, ge=0, le=256)
    # Live streams one worker reports it carries at 1.25x real time; 0 = measured as it runs (workers/capacity.py).
    WORKER_LIVE_CAPACITY: int = Field(0, ge=0, le=256)
    # A running segment's lease: renewed by its worker every third of it; a worker that died loses it, and the
    # reaper (every REAPER_INTERVAL_SECONDS, in every worker) gives the segment to another worker.
    SEGMENT_LEASE_SECONDS: float = Field(10.0, gt=0)
    REAPER_INTERVAL_SECONDS: float = Field(2.0, gt=0)
    WORKER_HEARTBEAT_SECONDS: int = 5

    # --- Flower ------------------------------------------------------------------------------------
    # Read by Flower itself (it takes FLOWER_* variables); scripts/flower.sh gives the defaults. Listed here so
    # that one typed object, and one table in the README, name every variable the farm reads.
    FLOWER_ADDRESS: str = "127.0.0.1"
    FLOWER_PORT: int = 5555
    # user:password for Flower's HTTP basic authentication; unset, `make run` generates one and prints it.
    FLOWER_BASIC_AUTH: SecretStr | None = None

    # --- voices --------------------------------------------------------------------------------
    MAX_UPLOAD_MB: int = 20
    MAX_REFERENCE_SECONDS: float = 60.0
    # Per /clone_speaker request: reference files, and seconds of audio in all of them (decoding stops there).
    MAX_REFERENCE_PARTS: int = Field(5, ge=1)
    MAX_REFERENCE_TOTAL_SECONDS: float = Field(120.0, gt=0)
    CLONE_TIMEOUT_SECONDS: int = 120

    @field_validator("API_KEYS_REQUIRED", mode="before")
    @classmethod
    def _auto_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "auto") else value

    @field_validator("CUSTOM_MODEL_PATH", mode="before")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _sentinels_without_tls(self) -> Settings:
        if self.REDIS_SENTINELS.strip() and self.REDIS_URL.startswith("rediss://"):
            raise ValueError(
                "REDIS_SENTINELS with a rediss:// REDIS_URL: TLS to a master found through Sentinel is not supported "
                "yet (the connection would fall back to plain TCP); use Sentinel on a private network, or one Redis "
                "with TLS"
            )
        return self

    @property
    def redis_sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses; empty: REDIS_URL names the one Redis."""
        pairs = [item.strip().rsplit(":", 1) for item in self.REDIS_SENTINELS.split(",") if item.strip()]
        return [(host, int(port)) for host, port in pairs]

    @property
    def preload_voices(self) -> list[str]:
        return [v.strip() for v in self.PRELOAD_VOICES.split(",") if v.strip()]


class InvalidSettings(SystemExit):
    """A setting's value is wrong: the process stops at start-up with one line naming the variable.

    A SystemExit, so that whichever program reads the settings first (gunicorn's config file, Celery's app
    module, Flower, a command-line tool) stops with exactly this line and no traceback, and no `except
    Exception` on the way can swallow it and start with a half-read configuration.
    """

    def __init__(self, error: ValidationError) -> None:
        problems = []
        for e in error.errors(include_url=False):
            name = ".".join(str(part) for part in e["loc"])
            problems.append(f"{name}={e.get('input')!r}: {e['msg']}")
        label = "invalid setting" if len(problems) == 1 else "invalid settings"
        super().__init__(f"{label} " + "; ".join(problems))


_configured: Settings | None = None


def configure(settings: Settings | None) -> None:
    """Make `settings` the process's settings object (None: read the environment again on next use).

    Everything reads settings through `get_settings()`, so an app factory given a settings object, or a test,
    changes them for the whole process in this one place.
    """
    global _configured  # noqa: PLW0603 - the one process-wide settings object, by design
    _configured = settings
    _from_environment.cache_clear()


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings(exc) from None


def get_settings() -> Settings:
    return _configured if _configured is not None else _from_environment()
