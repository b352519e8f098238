"""Books: POST /books (a document in), GET /books/{id} (progress per chapter, ETA), its audiobook, captions and
sentence index, its segments, and any sentence said again."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from flask import Response, current_app, request, url_for
from flask_openapi3 import APIBlueprint, Tag
from pydantic import ValidationError

from api import book_audio, captions
from api.auth import caller
from api.book_submission import document_format, submit_book
from api.delivery import cancel
from api.encoding import MEDIA_TYPES, encode_file
from api.errors import invalid_input_from, validation_error_response
from api.responses import json_model
from api.schemas.books import (
    BookAudioQuery,
    BookCaptionsQuery,
    BookCreated,
    BookForm,
    BookIndex,
    BookList,
    BookOptions,
    BookPath,
    BookRequest,
    BookSegment,
    BookSegmentPath,
    BookSegments,
    BookStatus,
    ChapterProgress,
    DeletedBook,
    DocumentFormat,
    IndexChapter,
    IndexSentence,
    RedoCreated,
    RedoRequest,
    RedoState,
    SegmentsQuery,
)
from api.schemas.common import ErrorResponse, audio_response
from api.submission import LiveWorkers, VoiceChoice, admit_and_send, spoken_segments, voice_by_name
from shared import books, jobs, lexicon_store, streams
from shared.audio import SAMPLE_RATE
from shared.db import session_scope
from shared.errors import InvalidInput, JobNotReady
from shared.normalization import NormalizeMode
from shared.priority import Priority
from shared.redis_client import get_redis
from shared.voice_kind import VoiceKind

log = logging.getLogger(__name__)
bp = APIBlueprint("books", __name__, abp_tags=[Tag(name="books", description="Audiobooks from documents")])
BOOK_MEDIA_TYPES = {"m4b": "audio/mp4", "mp3": "audio/mpeg", "opus": "audio/ogg", "wav": "audio/wav"}
BOOK_AUDIO = {
    "description": "The audiobook (or one chapter): M4B with chapters, tags and cover; MP3 with ID3 chapters; "
    "Ogg Opus; WAV",
    "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in BOOK_MEDIA_TYPES.values()},
}
CAPTIONS = {
    "description": "WebVTT or SubRip captions of the whole book",
    "content": {"text/vtt": {"schema": {"type": "string"}}, "application/x-subrip": {"schema": {"type": "string"}}},
}


def _celery() -> Celery:
    celery: Celery = current_app.extensions["celery"]
    return celery


def _book(book_id: str, *, with_cover: bool = False) -> books.LoadedBook:
    return books.load_book(book_id, caller().tenant, with_cover=with_cover)


@bp.post(
    "/books",
    responses={202: BookCreated, 400: ErrorResponse, 413: ErrorResponse, 422: ErrorResponse, 429: ErrorResponse},
)
def create_book(form: BookForm) -> Response:
    """Turn a document into an audiobook: an EPUB, Markdown, HTML or plain-text file (multipart: `file`, and
    `options` as JSON), or a JSON body with the document's `text` and the same options. Chapters come from the EPUB's
    spine and table of contents (or headings, or `Chapter N` lines); title, author, language and cover from its
    metadata unless the options say. The book is one bulk job spread over every worker; poll GET /books/{id}."""
    fmt: DocumentFormat
    if request.is_json:
        try:
            body = BookRequest.model_validate(request.get_json())
        except ValidationError as exc:
            return validation_error_response(exc)
        data, fmt, options = (
            body.text.encode(),
            body.format or "text",
            BookOptions.model_validate(body.model_dump(exclude={"text"})),
        )
    else:
        if form.file is None or form.options is None:
            raise InvalidInput("send the document in the file field and its options (JSON) in the options field")
        options = _options(form.options)
        data, fmt = form.file.read(), document_format(options.format, form.file.filename)
    submitted = submit_book(_celery(), data, fmt, options, caller().tenant)
    job = submitted.job
    created = BookCreated(
        id=job.id,
        title=submitted.title,
        chapters=submitted.chapters,
        segments=job.segments_total,
        characters=submitted.characters,
        priority=job.priority,
        status_url=url_for("books.book_status", book_id=job.id),
        warnings=submitted.warnings,
    )
    return json_model(created, 202, headers={"Location": created.status_url})


def _options(raw: dict[str, Any] | str) -> BookOptions:
    try:
        return BookOptions.model_validate(raw) if isinstance(raw, dict) else BookOptions.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidInput(f"options is not valid JSON: {str(raw)[:80]!r}") from exc
        raise invalid_input_from(exc, prefix="options") from exc


@bp.get("/books", responses={200: BookList})
def list_books() -> Response:
    """The caller's books, newest first (the last 100)."""
    return json_model(BookList(books=books.book_ids(caller().tenant)))


@bp.get("/books/<book_id>", responses={200: BookStatus, 404: ErrorResponse})
def book_status(path: BookPath) -> Response:
    """The book's state and progress, per chapter, and when it should be done at the throughput measured so far."""
    loaded = _book(path.book_id)
    book, job = loaded.book, loaded.job
    made = book_audio.progress(loaded)
    chapters = [
        ChapterProgress(
            chapter=n,
            title=layout.title,
            state=made.states[n],
            language=layout.language or book.language,
            voice=layout.voice or book.voice,
            segments_total=layout.count,
            segments_done=made.done[n],
            audio_seconds=round(made.samples[n] / SAMPLE_RATE, 3),
            audio_url=url_for("books.book_audio_file", book_id=book.id, chapter=n),
        )
        for n, layout in enumerate(loaded.chapters)
    ]
    status = BookStatus(
        id=book.id,
        title=book.title,
        author=book.author,
        language=book.language,
        voice=book.voice,
        state=job.state,
        error=job.error,
        segments_total=job.segments_total,
        segments_done=job.segments_done,
        characters_total=made.characters_total,
        characters_done=made.characters_done,
        audio_seconds=round(sum(made.samples) / SAMPLE_RATE, 3),
        characters_per_second=made.characters_per_second,
        eta_seconds=made.eta_seconds,
        created=job.created_at,
        started=job.started_at,
        finished=job.finished_at,
        chapters=chapters,
        audio_url=url_for("books.book_audio_file", book_id=book.id),
        captions_url=url_for("books.book_captions", book_id=book.id),
        index_url=url_for("books.book_index", book_id=book.id),
        segments_url=url_for("books.book_segments", book_id=book.id),
    )
    return json_model(status)


@bp.delete("/books/<book_id>", responses={200: DeletedBook, 404: ErrorResponse})
def delete_book(path: BookPath) -> Response:
    """Delete a book: its job is cancelled if it still runs, then the job, its redos and all their audio are gone."""
    ids = books.job_ids(path.book_id, caller().tenant)
    for job_id in ids:
        cancel(job_id)  # its workers stop within one chunk
    books.delete_jobs(ids)
    return json_model(DeletedBook(id=path.book_id, jobs=len(ids)))


@bp.get(
    "/books/<book_id>/audio",
    responses={200: BOOK_AUDIO, 404: ErrorResponse, 409: ErrorResponse, 410: ErrorResponse, 502: ErrorResponse},
)
def book_audio_file(path: BookPath, query: BookAudioQuery) -> Response:
    """The finished book as one file (or one chapter with `chapter`), loudness-normalised (EBU R128, two passes)
    to the book's `loudness_lufs`, with its pauses between paragraphs and chapters; rebuilt from the stored
    sentences each time, so a sentence said again is in it at once."""
    loaded = _book(path.book_id, with_cover=True)
    data = book_audio.book_file(loaded, query.format, query.chapter)
    name = f"{loaded.book.id}{'' if query.chapter is None else f'-{query.chapter}'}.{query.format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(data, content_type=BOOK_MEDIA_TYPES[query.format], headers=headers)


@bp.get(
    "/books/<book_id>/captions", responses={200: CAPTIONS, 404: ErrorResponse, 409: ErrorResponse, 410: ErrorResponse}
)
def book_captions(path: BookPath, query: BookCaptionsQuery) -> Response:
    """Captions of the whole book's audio (GET /books/{id}/audio), a cue per sentence or per word."""
    cues = book_audio.book_cues(_book(path.book_id), query.granularity)
    return Response(captions.render(cues, query.format), content_type=captions.MEDIA_TYPES[query.format])


@bp.get(
    "/books/<book_id>/index", responses={200: BookIndex, 404: ErrorResponse, 409: ErrorResponse, 410: ErrorResponse}
)
def book_index(path: BookPath) -> Response:
    """Where each chapter and sentence starts and ends in the whole book's audio, for a player to show and seek
    the text."""
    loaded = _book(path.book_id)
    book_audio.finished(loaded)
    placed = book_audio.timeline(loaded, book_audio.sentence_audio(loaded, pcm=False))
    ms = book_audio.ms_of
    index = BookIndex(
        duration_ms=ms(placed.samples),
        chapters=[
            IndexChapter(chapter=n, title=c.title, start_ms=ms(c.start), end_ms=ms(c.end))
            for n, c in enumerate(placed.chapters)
        ],
        sentences=[
            IndexSentence(
                index=s.index, chapter=s.chapter, text=s.text, start_ms=ms(s.start), end_ms=ms(s.start + s.samples)
            )
            for s in placed.sentences
            if s.text.strip()
        ],
    )
    return json_model(index)


@bp.get("/books/<book_id>/segments", responses={200: BookSegments, 404: ErrorResponse})
def book_segments(path: BookPath, query: SegmentsQuery) -> Response:
    """The book's segments (sentences and pauses) with what each says, its state, its newest redo and its audio
    URL: what a page needs to offer "play, redo"."""
    loaded = _book(path.book_id)
    chapter_of = {i: n for n, layout in enumerate(loaded.chapters) for i in layout.indexes}
    indexes = [i for i in sorted(chapter_of) if query.chapter is None or chapter_of[i] == query.chapter]
    listed = []
    for index in indexes[query.offset : query.offset + query.limit]:
        segment = loaded.job.segments[index]
        redo = loaded.redos.get(index)
        listed.append(
            BookSegment(
                index=index,
                chapter=chapter_of[index],
                text=loaded.text_of(index),
                state=segment.state,
                is_pause=not segment.text,
                audio_seconds=round(segment.samples / SAMPLE_RATE, 3) if segment.state == "succeeded" else None,
                audio_url=url_for("books.segment_audio", book_id=loaded.book.id, index=index),
                redo=RedoState(job_id=redo.job_id, state=redo.state, text=redo.text) if redo else None,
            )
        )
    return json_model(BookSegments(segments=listed, total=len(indexes)))


@bp.get(
    "/books/<book_id>/segments/<index>/audio",
    responses={200: audio_response("The sentence's audio (WAV)"), 404: ErrorResponse, 409: ErrorResponse},
)
def segment_audio(path: BookSegmentPath) -> Response:
    """One sentence's audio as the book has it now (its newest successful redo's where there is one), as WAV."""
    loaded = _book(path.book_id)
    books.segment_of(loaded, path.index)
    source = books.segment_sources(loaded)[path.index]
    found = books.kept_audio([source], pcm=True).get(source)
    if found is None or found.pcm is None:
        state = loaded.job.segments[path.index].state
        raise JobNotReady(f"segment {path.index} of book {loaded.book.id} has no audio yet: it is {state}")
    return Response(encode_file(found.pcm, "wav"), content_type=MEDIA_TYPES["wav"])


@bp.post(
    "/books/<book_id>/segments/<index>/redo",
    responses={202: RedoCreated, 400: ErrorResponse, 404: ErrorResponse, 429: ErrorResponse},
)
def redo_segment(path: BookSegmentPath, body: RedoRequest) -> Response:
    """Say one sentence again (with new `text`, `voice` or `seed` if given; else another take of the same): a job
    of one segment, live, whose audio replaces the sentence's in the book's audio, captions and index once it has
    succeeded. Nothing else is said again. Poll the job (status_url) or the book's segments."""
    loaded = _book(path.book_id)
    segment = books.segment_of(loaded, path.index)
    if not segment.text:
        raise InvalidInput(f"segment {path.index} of book {loaded.book.id} is a pause: it says nothing to say again")
    job = loaded.job
    tenant = caller().tenant
    language = segment.language or job.language
    text = _redo_text(loaded, body.text, language, tenant) if body.text is not None else segment.text
    farm = LiveWorkers.now()
    voice = (
        voice_by_name(farm, body.voice, tenant)
        if body.voice
        else VoiceChoice(VoiceKind(segment.voice_kind or job.voice_kind), segment.voice_ref or job.voice_ref)
    )
    params = dict(job.params)
    params["seed"] = body.seed
    if segment.speed is not None:
        params["speed"] = segment.speed
    with session_scope() as s:
        redo = jobs.create_job(
            s,
            origin=jobs.BOOK_REDO_ORIGIN,
            tenant=tenant,
            text=text,
            language=language,
            voice_kind=voice.kind,
            voice_ref=voice.ref,
            params=params,
            segments=[text],
            epoch=streams.current_epoch(get_redis()),
            priority=Priority.LIVE,
            priority_stated=True,
        )
        books.add_redo(s, loaded.book.id, path.index, redo.id, text)
    admit_and_send(_celery(), redo, farm)
    created = RedoCreated(
        book_id=loaded.book.id,
        index=path.index,
        job_id=redo.id,
        state=redo.state,
        status_url=url_for("jobs.job_status", job_id=redo.id),
    )
    return json_model(created, 202, headers={"Location": created.status_url})


def _redo_text(loaded: books.LoadedBook, text: str, language: str, tenant: str) -> str:
    """New words for one sentence, said as the book's are (its normalisation, its lexicons): they must stay one
    segment."""
    book = loaded.book
    lexicons = lexicon_store.for_request(tenant, book.lexicons)
    normalize: NormalizeMode = "off" if book.normalize == "off" else "auto"
    spoken = spoken_segments(text, language, normalize, "text", lexicons)
    if len(spoken.segments) != 1 or spoken.segments[0].is_pause:
        raise InvalidInput(
            f"the new text makes {len(spoken.segments)} segments; a redo says one sentence: send one sentence"
        )
    return spoken.segments[0].text
