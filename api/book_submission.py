"""A document becoming a book: read (shared/documents), each chapter's title and paragraphs said as any request's
text is (api.submission.spoken_segments: normalisation, lexicons, pause tags), stored as one bulk job whose segments
are grouped by chapter (shared/books.py), and dispatched over every worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import PurePath

from celery import Celery

from api.audiobook import COVER_TYPES
from api.schemas.books import BookOptions, ChapterOptions, DocumentFormat
from api.submission import (
    LiveWorkers,
    VoiceChoice,
    admit_and_send,
    check_language,
    spoken_segments,
    stored_segments,
    voice_by_name,
)
from shared import books, jobs, lexicon_store, logs, streams
from shared.db import session_scope
from shared.documents.model import Chapter
from shared.documents.read import read_document
from shared.errors import InvalidInput, NothingToSpeak, UnknownLanguage
from shared.lexicons import Lexicon
from shared.models import Job
from shared.params import SynthesisParams
from shared.priority import priority_for
from shared.redis_client import get_redis
from shared.settings import get_settings

log = logging.getLogger(__name__)
_EXTENSIONS: dict[str, DocumentFormat] = {
    ".epub": "epub",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".txt": "text",
    ".text": "text",
}


def document_format(stated: DocumentFormat | None, filename: str | None) -> DocumentFormat:
    """The format the options state, else the one the file's name says, else plain text."""
    if stated is not None:
        return stated
    return _EXTENSIONS.get(PurePath(filename or "").suffix.lower(), "text")


@dataclass(frozen=True)
class Submitted:
    job: Job
    title: str
    chapters: int
    characters: int
    warnings: list[str]


def submit_book(celery: Celery, data: bytes, fmt: DocumentFormat, options: BookOptions, tenant: str) -> Submitted:
    """Read the document, store the book as a job and enqueue it; refuses as `read_document` and any synthesis
    request does (a voice or language the farm does not have, a chapter option for a chapter that is not there)."""
    document = read_document(data, fmt)
    farm = LiveWorkers.now()
    language = _book_language(farm, options.language, document.language)
    voice = voice_by_name(farm, options.voice, tenant)
    lexicons = lexicon_store.for_request(tenant, options.lexicons)
    overrides = _chapter_options(options.chapters, len(document.chapters))
    segments: list[jobs.NewSegment] = []
    layouts: list[books.ChapterLayout] = []
    warnings = list(document.warnings)
    for number, chapter in enumerate(document.chapters):
        override = overrides.get(number, ChapterOptions(chapter=number))
        layout = _add_chapter(farm, chapter, override, options, language, lexicons, tenant, segments, warnings)
        if layout is not None:
            layouts.append(layout)
    if not segments:
        raise NothingToSpeak("the document has no text to read aloud once normalised")
    title = options.title or document.title or "Untitled"
    # Only what an audiobook can attach (api/audiobook.py): another image type is not kept.
    cover = document.cover if document.cover and document.cover.media_type in COVER_TYPES else None
    info = books.BookInfo(
        title=title[:500],
        author=(options.author or document.author or "")[:500] or None,
        language=language,
        voice=options.voice,
        paragraph_pause_ms=options.paragraph_pause_ms,
        chapter_pause_ms=options.chapter_pause_ms,
        loudness_lufs=options.loudness_lufs,
        normalize=options.normalize,
        lexicons=options.lexicons,
        cover_type=cover.media_type if cover else None,
        cover=cover.data if cover else None,
    )
    job = _store(celery, farm, options, tenant, voice, language, segments, layouts, info)
    return Submitted(job, info.title, len(layouts), sum(len(s.text) for s in segments), warnings)


def _book_language(farm: LiveWorkers, stated: str | None, documents: str | None) -> str:
    if stated is not None:
        check_language(farm, stated)
        return stated
    if documents is None:
        return "en"
    found = xtts_language(documents, farm.languages[0])
    if found is None:
        raise UnknownLanguage(
            f"the document's language {documents[:40]!r} is not one the farm speaks; send language in the options",
            details={"supported": farm.languages[0]},
        )
    return found


def xtts_language(tag: str, supported: list[str]) -> str | None:
    """A document's language tag (BCP 47: en-GB, pt-BR, zh-Hans-CN) as one of `supported` (en, pt, zh-cn)."""
    tag = tag.strip().lower().replace("_", "-")
    if tag in supported:
        return tag
    primary = tag.split("-", 1)[0]
    if primary == "zh" and "zh-cn" in supported:
        return "zh-cn"
    return primary if primary in supported else None


def _chapter_options(given: list[ChapterOptions], chapters: int) -> dict[int, ChapterOptions]:
    found: dict[int, ChapterOptions] = {}
    for option in given:
        if option.chapter >= chapters:
            raise InvalidInput(f"chapters names chapter {option.chapter}; the document has {chapters} (from 0)")
        if option.chapter in found:
            raise InvalidInput(f"chapters names chapter {option.chapter} twice")
        found[option.chapter] = option
    return found


def _add_chapter(
    farm: LiveWorkers,
    chapter: Chapter,
    override: ChapterOptions,
    options: BookOptions,
    language: str,
    lexicons: list[Lexicon],
    tenant: str,
    segments: list[jobs.NewSegment],
    warnings: list[str],
) -> books.ChapterLayout | None:
    """Append the chapter's segments (its title first, where titles are said) and return where they are."""
    title = override.title or chapter.title
    said_in = override.language or _chapter_language(farm, chapter.language, language)
    check_language(farm, said_in)
    voice = voice_by_name(farm, override.voice, tenant) if override.voice else None
    first, ends = len(segments), []
    paragraphs = ((title,) if options.speak_titles else ()) + chapter.paragraphs
    for paragraph in paragraphs:
        before = len(segments)
        for piece in within(paragraph, get_settings().MAX_TEXT_CHARS):
            try:
                spoken = spoken_segments(piece, said_in, options.normalize, "text", lexicons)
            except NothingToSpeak:
                continue  # a paragraph of ornaments ("* * *") says nothing
            for segment in stored_segments(farm, spoken, said_in, options.speed, tenant):
                segments.append(_said(segment, said_in, language, voice))
        if len(segments) > before:
            ends.append(len(segments) - 1)
    if len(segments) == first:
        warnings.append(f"chapter {title[:80]!r} has nothing to read aloud: it is left out")
        return None
    return books.ChapterLayout(
        title,
        first,
        len(segments) - first,
        said_in if said_in != language else None,
        override.voice,
        frozenset(ends),
    )


def within(paragraph: str, limit: int) -> list[str]:
    """A paragraph in pieces of at most `limit` characters, cut at a space where there is one (a text file with
    no blank lines reads as one paragraph; a request's text is at most MAX_TEXT_CHARS)."""
    pieces = []
    while len(paragraph) > limit:
        cut = paragraph.rfind(" ", 0, limit + 1)
        cut = cut if cut > 0 else limit
        pieces.append(paragraph[:cut])
        paragraph = paragraph[cut:].lstrip()
    return [*pieces, paragraph] if paragraph else pieces


def _chapter_language(farm: LiveWorkers, tag: str | None, book_language: str) -> str:
    """A chapter's own language where its document says one the farm speaks; else the book's."""
    if tag is None:
        return book_language
    return xtts_language(tag, farm.languages[0]) or book_language


def _said(segment: jobs.NewSegment, said_in: str, book_language: str, voice: VoiceChoice | None) -> jobs.NewSegment:
    """The segment as the book's job stores it: its language and voice where they are not the book's."""
    language = said_in if said_in != book_language else None
    if voice is None or not segment.text:
        return replace(segment, language=language)
    return replace(segment, language=language, voice_kind=voice.kind, voice_ref=voice.ref)


def _store(
    celery: Celery,
    farm: LiveWorkers,
    options: BookOptions,
    tenant: str,
    voice: VoiceChoice,
    language: str,
    segments: list[jobs.NewSegment],
    layouts: list[books.ChapterLayout],
    info: books.BookInfo,
) -> Job:
    params = SynthesisParams.model_validate(options.model_dump(include=set(SynthesisParams.model_fields))).model_dump()
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin=jobs.BOOK_ORIGIN,
            tenant=tenant,
            text="\n\n".join(segment.text for segment in segments if segment.text),
            language=language,
            voice_kind=voice.kind,
            voice_ref=voice.ref,
            params=params,
            segments=segments,
            epoch=streams.current_epoch(get_redis()),
            priority=priority_for(jobs.BOOK_ORIGIN, options.priority),
            priority_stated=options.priority is not None,
        )
        books.create_book(s, job, info, layouts)
    logs.bind(job_id=job.id, tenant=tenant)
    log.info("book queued: %d chapters, %d segments, language %s", len(layouts), len(segments), language)
    admit_and_send(celery, job, farm)
    return job
