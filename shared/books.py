"""Books in SQL: a book is a bulk job (origin "book") whose segments are its sentences, grouped by chapter in its
Book row; its segments' audio is kept in SQL (KeptAudio) by the workers, and a sentence said again is a job of one
segment (origin "book_redo") whose kept audio replaces the book's own once it has succeeded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload, undefer

from shared import jobs
from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Book, BookRedo, Job, JobSegment, JobState, KeptAudio, utcnow
from shared.voice_kind import VoiceKind


@dataclass(frozen=True)
class ChapterLayout:
    """Where a chapter's sentences are among its book's segments, and how it is said."""

    title: str
    first: int
    count: int
    language: str | None = None  # None: the book's
    voice: str | None = None  # None: the book's
    paragraph_ends: frozenset[int] = frozenset()  # segment indexes after which a paragraph ends

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "first": self.first,
            "count": self.count,
            "language": self.language,
            "voice": self.voice,
            "paragraph_ends": sorted(self.paragraph_ends),
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> ChapterLayout:
        return cls(
            data["title"],
            data["first"],
            data["count"],
            data.get("language"),
            data.get("voice"),
            frozenset(data.get("paragraph_ends", ())),
        )

    @property
    def indexes(self) -> range:
        return range(self.first, self.first + self.count)

    def pause_after(self, index: int) -> bool:
        """Whether a paragraph pause follows segment `index`: it ends a paragraph, and not the chapter (the chapter's
        pause follows that one)."""
        return index in self.paragraph_ends and index != self.indexes[-1]


@dataclass(frozen=True)
class BookInfo:
    title: str
    author: str | None
    language: str
    voice: str
    paragraph_pause_ms: int
    chapter_pause_ms: int
    loudness_lufs: float
    normalize: str = "auto"
    lexicons: list[str] | None = None
    cover_type: str | None = None
    cover: bytes | None = None


def create_book(session: Session, job: Job, info: BookInfo, chapters: Sequence[ChapterLayout]) -> Book:
    """The book of a job made in `session` (jobs.create_job, origin "book"), in the same transaction."""
    session.flush()  # the job's row first: the book's refers to it, and the two are not related in the ORM
    book = Book(
        id=job.id,
        tenant=job.tenant,
        title=info.title,
        author=info.author,
        language=info.language,
        voice=info.voice,
        chapters=[c.as_json() for c in chapters],
        paragraph_pause_ms=info.paragraph_pause_ms,
        chapter_pause_ms=info.chapter_pause_ms,
        loudness_lufs=info.loudness_lufs,
        normalize=info.normalize,
        lexicons=info.lexicons,
        cover_type=info.cover_type,
        cover=info.cover,
        created_at=utcnow(),
    )
    session.add(book)
    return book


@dataclass(frozen=True)
class Redo:
    """The newest redo of a sentence: its job, its state, and what it says."""

    job_id: str
    state: str
    text: str


@dataclass
class LoadedBook:
    """A book with its job (and the job's segments) and its redos, read in one session: per sentence, its newest
    redo (`redos`, whatever its state) and its newest successful one (`said_again`, whose audio and words count)."""

    book: Book
    job: Job
    redos: dict[int, Redo]
    said_again: dict[int, Redo]

    @property
    def chapters(self) -> list[ChapterLayout]:
        return [ChapterLayout.of(c) for c in self.book.chapters]

    def text_of(self, index: int) -> str:
        """What the sentence says now: its newest successful redo's text, else the book's."""
        redo = self.said_again.get(index)
        return redo.text if redo is not None else self.job.segments[index].text


def load_book(book_id: str, tenant: str, *, with_cover: bool = False) -> LoadedBook:
    """The tenant's book, or NotFound (another tenant's book is not found either)."""
    with session_scope() as s:
        query = select(Book).where(Book.id == book_id, Book.tenant == tenant)
        if with_cover:
            query = query.options(undefer(Book.cover))
        book = s.scalars(query).one_or_none()
        if book is None:
            raise NotFound(f"book {book_id!r} does not exist")
        job = s.scalars(select(Job).where(Job.id == book_id).options(selectinload(Job.segments))).one()
        rows = s.execute(
            select(BookRedo.index, BookRedo.job_id, BookRedo.text, Job.state)
            .join(Job, Job.id == BookRedo.job_id)
            .where(BookRedo.book_id == book_id)
            .order_by(BookRedo.created_at, Job.created_at)
        ).all()
        redos: dict[int, Redo] = {}
        said_again: dict[int, Redo] = {}
        for row in rows:  # oldest first: the newest of each sentence stays
            redo = Redo(row.job_id, row.state, row.text)
            redos[int(row[0])] = redo
            if row.state == JobState.SUCCEEDED.value:
                said_again[int(row[0])] = redo
        s.expunge_all()
        return LoadedBook(book, job, redos, said_again)


def book_ids(tenant: str, limit: int = 100) -> list[str]:
    """The tenant's books, newest first."""
    with session_scope() as s:
        query = select(Book.id).where(Book.tenant == tenant).order_by(Book.created_at.desc()).limit(limit)
        return list(s.scalars(query))


def add_redo(session: Session, book_id: str, index: int, job_id: str, text: str) -> None:
    """`job_id` (a job of one segment, made in `session`) says the book's sentence `index` again as `text`."""
    session.flush()  # the redo job's row first (see create_book)
    session.add(BookRedo(job_id=job_id, book_id=book_id, index=index, text=text, created_at=utcnow()))


def job_ids(book_id: str, tenant: str) -> list[str]:
    """The book's job and its redos' jobs (NotFound for another tenant's book)."""
    with session_scope() as s:
        if s.scalars(select(Book.id).where(Book.id == book_id, Book.tenant == tenant)).one_or_none() is None:
            raise NotFound(f"book {book_id!r} does not exist")
        return [book_id, *s.scalars(select(BookRedo.job_id).where(BookRedo.book_id == book_id))]


def delete_jobs(ids: Sequence[str]) -> None:
    """Delete jobs, with all that is theirs (segments, kept audio, a book and its redos: foreign keys cascade)."""
    with session_scope() as s:
        s.execute(delete(Job).where(Job.id.in_(list(ids))))


def segment_sources(loaded: LoadedBook) -> list[tuple[str, int]]:
    """Where each sentence's audio is: (job, segment) of its newest successful redo, else of the book's job."""
    sources = [(loaded.job.id, index) for index in range(loaded.job.segments_total)]
    for index, redo in loaded.said_again.items():
        if 0 <= index < len(sources):
            sources[index] = (redo.job_id, 0)
    return sources


@dataclass(frozen=True)
class SentenceAudio:
    samples: int
    marks: bytes | None
    pcm: bytes | None = None  # left out unless asked for


def kept_audio(sources: Sequence[tuple[str, int]], *, pcm: bool) -> dict[tuple[str, int], SentenceAudio]:
    """The kept audio of these segments (those that have it), with their PCM only if `pcm`."""
    found: dict[tuple[str, int], SentenceAudio] = {}
    by_job: dict[str, list[int]] = {}
    for job_id, index in sources:
        by_job.setdefault(job_id, []).append(index)
    with session_scope() as s:
        for job_id, indexes in by_job.items():
            wanted = set(indexes)
            # A range, not a list: a book's thousands of segments are not thousands of bound parameters.
            between = KeptAudio.index.between(min(indexes), max(indexes))
            query = select(KeptAudio).where(KeptAudio.job_id == job_id, between)
            if pcm:
                query = query.options(undefer(KeptAudio.pcm))
            for row in s.scalars(query):
                if row.index not in wanted:
                    continue
                found[(row.job_id, row.index)] = SentenceAudio(row.samples, row.marks, row.pcm if pcm else None)
    return found


def segment_of(loaded: LoadedBook, index: int) -> JobSegment:
    if not 0 <= index < len(loaded.job.segments):
        raise NotFound(f"book {loaded.book.id} has no segment {index}; it has {len(loaded.job.segments)}")
    return loaded.job.segments[index]


def new_redo_segment(segment: JobSegment, text: str | None) -> jobs.NewSegment:
    """The book's segment as a redo job says it: its own language, voice and speed, with new text if given."""
    return jobs.NewSegment(
        text if text is not None else segment.text,
        language=segment.language,
        voice_kind=VoiceKind(segment.voice_kind) if segment.voice_kind else None,
        voice_ref=segment.voice_ref,
        speed=segment.speed,
        pause_ms=segment.pause_ms,
    )
