"""A book's audio, rebuilt from its stored segments: where each sentence and chapter falls (its kept audio, a
redo's where one has succeeded, and the pauses between paragraphs and chapters put back), the audiobook file
(api/audiobook.py), its captions and its index, and its progress."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from api import audiobook, captions
from api.audiobook import BookFormat
from api.schemas.common import as_utc
from shared import books, streams
from shared.audio import SAMPLE_RATE
from shared.books import LoadedBook, SentenceAudio
from shared.errors import AudioExpired, JobNotReady, NotFound
from shared.models import JobSegment, JobState, utcnow


def samples_of(ms: int) -> int:
    return round(ms * SAMPLE_RATE / 1000)


def ms_of(samples: int) -> int:
    return round(samples * 1000 / SAMPLE_RATE)


@dataclass(frozen=True)
class Placed:
    """A sentence's place in the book's audio, in samples."""

    index: int
    chapter: int
    start: int
    samples: int
    text: str
    marks: bytes | None


@dataclass(frozen=True)
class PlacedChapter:
    title: str
    start: int
    end: int  # its last sentence's end (the pause after it is not in it)


@dataclass(frozen=True)
class Timeline:
    sentences: list[Placed]
    chapters: list[PlacedChapter]

    @property
    def samples(self) -> int:
        return self.chapters[-1].end if self.chapters else 0


def finished(loaded: LoadedBook) -> None:
    """Refuses (409) a book whose audio is not complete yet."""
    job = loaded.job
    if job.state != JobState.SUCCEEDED.value:
        detail = f": {job.error}" if job.error else ""
        raise JobNotReady(
            f"book {job.id} is {job.state}{detail}; its audio exists once it has succeeded",
            details={"state": job.state},
        )


def sentence_audio(loaded: LoadedBook, *, pcm: bool, indexes: range | None = None) -> dict[int, SentenceAudio]:
    """The kept audio of every sentence (or of those of `indexes`), by index: its newest successful redo's where
    there is one."""
    sources = books.segment_sources(loaded)
    wanted = indexes if indexes is not None else range(len(sources))
    found = books.kept_audio([sources[i] for i in wanted], pcm=pcm)
    missing = [index for index in wanted if sources[index] not in found]
    if missing:
        raise AudioExpired(
            f"book {loaded.job.id} has no stored audio for {len(missing)} of its segments (the first: {missing[0]})"
        )
    return {index: found[sources[index]] for index in wanted}


def timeline(loaded: LoadedBook, audio: dict[int, SentenceAudio]) -> Timeline:
    """Where every sentence and chapter is: sentences one after another, a paragraph pause after each paragraph but
    a chapter's last, a chapter pause after each chapter but the book's last."""
    book = loaded.book
    placed, chapters, at = [], [], 0
    layouts = loaded.chapters
    for number, chapter in enumerate(layouts):
        start = at
        for index in chapter.indexes:
            said = audio[index]
            placed.append(Placed(index, number, at, said.samples, loaded.text_of(index), said.marks))
            at += said.samples
            if chapter.pause_after(index):
                at += samples_of(book.paragraph_pause_ms)
        chapters.append(PlacedChapter(chapter.title, start, at))
        at += samples_of(book.chapter_pause_ms)
    return Timeline(placed, chapters)


def chapter_pcm(loaded: LoadedBook, number: int) -> bytes:
    """A chapter's PCM: its sentences with the paragraph pauses between them (one chapter in memory at a time)."""
    chapter = loaded.chapters[number]
    waiting = [i for i in chapter.indexes if loaded.job.segments[i].state != JobState.SUCCEEDED.value]
    if waiting:
        raise JobNotReady(
            f"chapter {number} of book {loaded.book.id} has {len(waiting)} sentences still to say; its audio exists "
            "once they are all said",
            details={"state": loaded.job.state},
        )
    audio = sentence_audio(loaded, pcm=True, indexes=chapter.indexes)
    pause = bytes(samples_of(loaded.book.paragraph_pause_ms) * 2)
    pieces = []
    for index in chapter.indexes:
        pieces.append(audio[index].pcm or b"")
        if chapter.pause_after(index):
            pieces.append(pause)
    return b"".join(pieces)


def book_file(loaded: LoadedBook, fmt: BookFormat, chapter: int | None = None) -> bytes:
    """The book (or one chapter, once its sentences are all said) as one file in `fmt`, at the book's loudness,
    with its chapters, tags and cover. The PCM goes to a file a chapter at a time: a book of hours is never in
    memory whole."""
    book = loaded.book
    if chapter is not None and chapter >= len(book.chapters):
        raise_no_chapter(loaded, chapter)
    if chapter is None:
        finished(loaded)
    numbers = range(len(book.chapters)) if chapter is None else [chapter]
    layouts = loaded.chapters
    pause = bytes(samples_of(book.chapter_pause_ms) * 2)
    with tempfile.TemporaryDirectory(prefix="xtts-book-") as folder:
        path = Path(folder) / "book.pcm"
        lengths = []
        with path.open("wb") as out:
            for n in numbers:
                if n != numbers[0]:
                    out.write(pause)
                pcm = chapter_pcm(loaded, n)
                out.write(pcm)
                lengths.append((layouts[n].title, len(pcm) // 2))
        title = book.title if chapter is None else f"{book.title}: {layouts[chapter].title}"
        info = audiobook.BookInfo(title=title, author=book.author, cover=book.cover, cover_type=book.cover_type)
        marks = audiobook.marks_of(lengths, book.chapter_pause_ms)
        return audiobook.audiobook_of_file(path, marks, info, fmt, book.loudness_lufs)


def raise_no_chapter(loaded: LoadedBook, chapter: int) -> None:
    raise NotFound(f"book {loaded.book.id} has no chapter {chapter}; it has {len(loaded.book.chapters)} (from 0)")


def book_cues(loaded: LoadedBook, granularity: captions.Granularity) -> list[captions.Cue]:
    """A cue per sentence (or word) of the finished book, at its place in the whole book's audio."""
    finished(loaded)
    placed = timeline(loaded, sentence_audio(loaded, pcm=False)).sentences
    cues: list[captions.Cue] = []
    for sentence in placed:
        if not sentence.text.strip():
            continue  # a pause
        start_ms = ms_of(sentence.start)
        if granularity == "sentence":
            cues.append(captions.Cue(start_ms, ms_of(sentence.start + sentence.samples), sentence.text.strip()))
        else:
            marks = streams.decode_marks(sentence.marks)
            cues += captions.word_cues(sentence.text, sentence.samples, marks, SAMPLE_RATE, start_ms)
    return cues


@dataclass(frozen=True)
class Progress:
    """How far a book has come: per chapter, and its throughput so far."""

    done: list[int]  # per chapter: segments done
    samples: list[int]  # per chapter: audio made
    states: list[str]
    characters_total: int
    characters_done: int
    characters_per_second: float | None
    eta_seconds: float | None


def progress(loaded: LoadedBook, now: datetime | None = None) -> Progress:
    job = loaded.job
    done, samples, states = [], [], []
    chars_total = chars_done = 0
    for chapter in loaded.chapters:
        segments = [job.segments[i] for i in chapter.indexes]
        finished_ones = [s for s in segments if s.state == JobState.SUCCEEDED.value]
        done.append(len(finished_ones))
        samples.append(sum(s.samples for s in segments))
        states.append(_chapter_state(job.state, len(finished_ones), segments))
        chars_total += sum(len(s.text) for s in segments)
        chars_done += sum(len(s.text) for s in finished_ones)
    rate = _rate(loaded, chars_done, now or utcnow())
    remaining = chars_total - chars_done
    eta = 0.0 if remaining == 0 else (round(remaining / rate, 1) if rate else None)
    if JobState(job.state).terminal and remaining:
        eta = None  # failed or cancelled: it will not finish
    return Progress(done, samples, states, chars_total, chars_done, rate, eta)


def _chapter_state(job_state: str, done: int, segments: list[JobSegment]) -> str:
    if done == len(segments):
        return JobState.SUCCEEDED.value
    if JobState(job_state).terminal:
        return job_state
    started = done or any(s.state == JobState.RUNNING.value for s in segments)
    return JobState.RUNNING.value if started else JobState.QUEUED.value


def _rate(loaded: LoadedBook, chars_done: int, now: datetime) -> float | None:
    """Characters said per second since the book's first segment started (until it finished)."""
    job = loaded.job
    started = as_utc(job.started_at)
    if started is None or chars_done == 0:
        return None
    until = as_utc(job.finished_at) or now
    seconds = (until - started).total_seconds()
    return round(chars_done / seconds, 3) if seconds > 0 else None
