"""Database models. The job row is the source of truth for a synthesis job's state."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.audio import SAMPLE_RATE
from shared.tenants import DEFAULT_TENANT


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


ACTIVE_STATES = tuple(s.value for s in JobState if not s.terminal)


class Job(Base):
    """One synthesis job: a text split into segments, each synthesized by some worker."""

    __tablename__ = "jobs"
    # Admission control counts a tenant's active jobs on every submission.
    __table_args__ = (
        Index("ix_jobs_tenant_state", "tenant", "state"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The tenant of the API key that created it: only that tenant sees, streams or cancels it.
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT)
    # POST /jobs with an Idempotency-Key: the same key (per tenant) returns this job instead of making another;
    # the digest tells a retry of the same request from a different request reusing the key.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Which endpoint created it (stream, tts, job): informative only.
    origin: Mapped[str] = mapped_column(String(16))
    # A Priority (shared/priority.py): which queue its segments go to and whether they yield to others in a batch.
    priority: Mapped[str] = mapped_column(String(8), default="live", server_default="live")
    # The request named its priority: a reader attaching to its stream does not make a bulk job live.
    priority_stated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    state: Mapped[str] = mapped_column(String(16), index=True, default=JobState.QUEUED.value)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16))
    # A VoiceKind and the voice's name within it. The columns keep the names they were created with (speaker_*):
    # renaming them would make the API and workers of a rolling upgrade disagree about the table for no gain.
    voice_kind: Mapped[str] = mapped_column("speaker_kind", String(16))
    voice_ref: Mapped[str] = mapped_column("speaker_ref", String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Latents sent inline with the request (VoiceKind.INLINE), as an .npz without pickles.
    inline_voice: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)

    # The text is still being written (a voice agent's context, api/agents/): segments are appended as sentences
    # arrive, and the job cannot succeed before its writer closes it, however many of its segments are done.
    text_open: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    segments_total: Mapped[int] = mapped_column(Integer)
    segments_dispatched: Mapped[int] = mapped_column(Integer, default=0)
    segments_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    audio_samples: Mapped[int] = mapped_column(Integer, default=0)
    sample_rate: Mapped[int] = mapped_column(Integer, default=SAMPLE_RATE)

    # The Redis "epoch" the job was queued in: if Redis restarts empty, jobs of an older epoch lost
    # their queue entries and audio, and are reported as failed instead of waiting forever.
    redis_epoch: Mapped[str] = mapped_column(String(32))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    first_chunk_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    segments: Mapped[list[JobSegment]] = relationship(
        back_populates="job", order_by="JobSegment.index", cascade="all, delete-orphan"
    )


class JobSegment(Base):
    """One segment of a job (a piece of its text): the unit a worker synthesizes, retries and streams.
    `chunks` and `samples` count the audio it has published."""

    __tablename__ = "job_segments"
    __table_args__ = (Index("ix_job_segments_state_lease", "state", "lease_expires_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    # How this segment is said where it differs from its job (SSML's <lang>, <voice> and <prosody rate>, or a
    # request's `segments`): None keeps the job's. A pause is a segment without text: `pause_ms` of silence.
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    voice_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    voice_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    speed: Mapped[float | None] = mapped_column(Float, nullable=True)
    pause_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The worker run that holds this segment while it runs, and until when (renewed by the worker's heartbeat):
    # a run whose lease expired lost the segment, and the reaper hands it to another worker.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A queued segment's task reached the broker at `sent_at`; until then the reaper sends it once `due_at`
    # has passed (the dispatcher died or the broker refused; or a retry's backoff is over).
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    job: Mapped[Job] = relationship(back_populates="segments")


class Voice(Base):
    """A saved voice: the conditioning XTTS needs, in SQL so that every worker on every machine can read it.

    Latents are stored as .npy bytes (loaded with allow_pickle=False: nothing user-supplied is unpickled).
    `revision` changes on every write; worker caches key on it, so an overwritten voice is never used stale.
    """

    __tablename__ = "voices"

    # Voice ids are per tenant: two tenants may each have a voice "narrator", and neither sees the other's.
    tenant: Mapped[str] = mapped_column(
        String(64), primary_key=True, default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    gpt_cond_latent: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    speaker_embedding: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    gpt_width: Mapped[int] = mapped_column(Integer)
    revision: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A saved blend's recipe, as a request writes it (`voice:weight+...`); None for any other voice.
    recipe: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PronunciationLexicon(Base):
    """A tenant's pronunciation lexicon (shared/lexicons.py): respellings applied to its requests' text. `entries`
    is a JSON list of {grapheme, alias, case_sensitive, whole_word}; `revision` changes on every write (the API's
    compiled lexicons are cached by it)."""

    __tablename__ = "lexicons"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    entries: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    revision: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VoiceAlias(Base):
    """A tenant's name for a voice (a saved voice, a built-in speaker, an OpenAI voice name or a blend): requests
    that name it get that voice. OpenAI's names are aliases by default (shared/voice_aliases.py); a tenant's own
    alias of one of them replaces it for that tenant."""

    __tablename__ = "voice_aliases"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    voice: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored (keys are 256 random bits, so a fast hash is enough: nothing to
    brute-force); the key itself is shown once, when `python -m api.keys create` makes it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    tenant: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Admin keys may also use the operator endpoints (cache clearing, worker details in /health).
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CloneResult(Base):
    """What cloning a given reference audio produced with a given model: cloning it again reuses this."""

    __tablename__ = "clone_results"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(300))
    gpt_cond_latent: Mapped[bytes] = mapped_column(LargeBinary)
    speaker_embedding: Mapped[bytes] = mapped_column(LargeBinary)
    gpt_width: Mapped[int] = mapped_column(Integer)
    reference_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Book(Base):
    """A book (POST /books): a bulk job whose segments are its sentences, read from a document and grouped by
    chapter. `chapters` is a JSON list of {title, first, count, language, voice, paragraph_ends}: each chapter's
    segments are `first` to `first + count - 1` of the job, and a paragraph ends after each index of
    `paragraph_ends`. The book's audio is made from its segments' kept audio (KeptAudio) with the pauses put back."""

    __tablename__ = "books"

    id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(500))
    author: Mapped[str | None] = mapped_column(String(500), nullable=True)
    language: Mapped[str] = mapped_column(String(16))
    voice: Mapped[str] = mapped_column(String(1000))
    chapters: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    paragraph_pause_ms: Mapped[int] = mapped_column(Integer)
    chapter_pause_ms: Mapped[int] = mapped_column(Integer)
    loudness_lufs: Mapped[float] = mapped_column(Float)
    # How its text was said (a NormalizeMode, and the lexicons the request named; None: all of the tenant's), so that
    # a sentence said again with new words is said as the book's are.
    normalize: Mapped[str] = mapped_column(String(8))
    lexicons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    cover_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cover: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BookRedo(Base):
    """A sentence of a book said again (POST /books/{id}/segments/{n}/redo): `job_id` is a job of one segment whose
    kept audio replaces the book's own once it has succeeded. Every redo is kept: the sentence says what its newest
    successful one says (one that fails, or is still running, leaves the one before it in place)."""

    __tablename__ = "book_redos"
    __table_args__ = (Index("ix_book_redos_book_index", "book_id", "index"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    book_id: Mapped[str] = mapped_column(ForeignKey("books.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KeptAudio(Base):
    """A segment's whole audio, kept in SQL by the worker that finished it, for jobs whose audio must outlive the
    Redis streams' STREAM_TTL_SECONDS (books and their redos): 16-bit PCM at the job's sample rate, and its
    attention marks (shared/streams.py's encoding) where the worker read them."""

    __tablename__ = "kept_audio"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    pcm: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    samples: Mapped[int] = mapped_column(Integer)
    marks: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
