"""Books: a document in (EPUB, Markdown, HTML, plain text), a chaptered audiobook out, any sentence said again."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask_openapi3 import FileStorage
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import (
    LANGUAGE_SCHEMA,
    NO_NUL,
    NORMALIZE_DESCRIPTION,
    PRIORITY_DESCRIPTION,
    LexiconName,
    as_utc,
    documented_as,
    lexicons_field,
    not_blank,
    nullable,
    self_contained,
    words_schema,
)
from shared.documents.model import MAX_CHAPTERS
from shared.normalization import NormalizeMode
from shared.params import SynthesisParams
from shared.priority import Priority

DocumentFormat = Literal["epub", "markdown", "html", "text"]
BookAudioFormat = Literal["m4b", "mp3", "opus", "wav"]
# A document sent as JSON text; a longer one is sent as a file (multipart), up to MAX_UPLOAD_MB.
MAX_JSON_TEXT_CHARS = 1_000_000
VOICE_DESCRIPTION = "A saved voice, a built-in speaker, an alias or a blend (`a:0.7+b:0.3`), as any request names one"


class BookPath(BaseModel):
    book_id: str = Field(..., max_length=64, pattern=NO_NUL, description="The book's id (its job's id).")


class BookSegmentPath(BookPath):
    index: int = Field(..., ge=0, le=10_000_000, description="The segment (sentence) number, from 0")


class ChapterOptions(BaseModel):
    """How one chapter is said where it differs from the book."""

    model_config = ConfigDict(extra="forbid")

    chapter: int = Field(..., ge=0, lt=MAX_CHAPTERS, description="The chapter's number in the book, from 0")
    title: str | None = Field(None, min_length=1, max_length=500, pattern=NO_NUL)
    voice: str | None = Field(None, min_length=1, max_length=1000, pattern=NO_NUL, description=VOICE_DESCRIPTION)
    language: str | None = Field(None, json_schema_extra=documented_as(nullable(LANGUAGE_SCHEMA)))


class BookOptions(SynthesisParams):
    """How a book is read and made: every field but `voice` has a default; title, author and language default to
    the document's own."""

    model_config = ConfigDict(extra="forbid")

    voice: str = Field(..., min_length=1, max_length=1000, pattern=NO_NUL, description=VOICE_DESCRIPTION)
    language: str | None = Field(
        None,
        description="The book's language (default: the document's, else en)",
        json_schema_extra=documented_as(nullable(LANGUAGE_SCHEMA)),
    )
    title: str | None = Field(None, min_length=1, max_length=500, pattern=NO_NUL)
    author: str | None = Field(None, min_length=1, max_length=500, pattern=NO_NUL)
    format: DocumentFormat | None = Field(
        None, description="The document's format (default: from the file's name, else plain text)"
    )
    chapters: list[ChapterOptions] = Field(default_factory=list, max_length=MAX_CHAPTERS)
    paragraph_pause_ms: int = Field(600, ge=0, le=10_000, description="Silence after each paragraph")
    chapter_pause_ms: int = Field(2000, ge=0, le=30_000, description="Silence after each chapter")
    loudness_lufs: float = Field(
        -18.0, ge=-40.0, le=-10.0, description="Integrated loudness of the audiobook (EBU R128), true peak -1 dBTP"
    )
    speak_titles: bool = Field(True, description="Say each chapter's title before its text")
    normalize: NormalizeMode = Field("auto", description=NORMALIZE_DESCRIPTION)
    lexicons: list[LexiconName] | None = lexicons_field()
    priority: Priority | None = Field(None, description=PRIORITY_DESCRIPTION + " A book is bulk unless it says.")


class BookRequest(BookOptions):
    """A book sent as JSON: its text in `format` (markdown, html or text; an EPUB is sent as a file, multipart)."""

    format: Literal["markdown", "html", "text"] | None = Field(
        None, description="The text's format (default: plain text)"
    )
    text: str = Field(
        ...,
        max_length=MAX_JSON_TEXT_CHARS,
        description="The document's text (a longer one is sent as a file, multipart)",
        json_schema_extra=documented_as(words_schema(MAX_JSON_TEXT_CHARS)),
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return not_blank(value, "text")


def _form_schema(schema: dict[str, Any]) -> None:
    schema["required"] = ["file", "options"]  # what the route checks (the fields are optional for a JSON body)


class BookForm(BaseModel):
    """A book sent as a file (multipart/form-data): the document, and its options as JSON. (The same endpoint takes
    a JSON body, BookRequest, instead.)"""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_form_schema)

    file: FileStorage | None = Field(
        None,
        description="The document: EPUB, Markdown (.md), HTML (.html) or text (.txt)",
        json_schema_extra=documented_as({"type": "string", "format": "binary"}),
    )
    # flask-openapi3 decodes JSON form fields itself: a dict here, or the raw text if it was not JSON.
    options: dict[str, Any] | str | None = Field(
        None,
        description='JSON, e.g. {"voice": "narrator", "chapter_pause_ms": 2000}',
        json_schema_extra=documented_as(lambda: self_contained(BookOptions.model_json_schema())),
    )


class BookAudioQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: BookAudioFormat = Field("m4b", description="m4b (AAC, chapters, cover), mp3 (ID3 chapters), opus, wav")
    chapter: int | None = Field(None, ge=0, lt=MAX_CHAPTERS, description="One chapter alone (from 0)")


class BookCaptionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["vtt", "srt"] = Field("vtt", description="vtt: WebVTT; srt: SubRip")
    granularity: Literal["sentence", "word"] = Field("sentence", description="A cue per sentence, or per word")


class SegmentsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chapter: int | None = Field(None, ge=0, lt=MAX_CHAPTERS, description="Only this chapter's segments")
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(100, ge=1, le=1000)


class RedoRequest(BaseModel):
    """What changes when a sentence is said again (nothing: the same words, voice and settings, another take)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(
        None, max_length=2000, description="New words", json_schema_extra=documented_as(nullable(words_schema(2000)))
    )
    voice: str | None = Field(None, min_length=1, max_length=1000, pattern=NO_NUL, description=VOICE_DESCRIPTION)
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Sampling seed (default: a new take each time)")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        return None if value is None else not_blank(value, "text")


class BookCreated(BaseModel):
    id: str
    title: str
    chapters: int
    segments: int
    characters: int
    priority: str
    status_url: str
    warnings: list[str] = Field(default_factory=list, description="What reading the document noticed")


class ChapterProgress(BaseModel):
    chapter: int
    title: str
    state: str = Field(..., description="queued, running, succeeded, failed or cancelled")
    language: str
    voice: str
    segments_total: int
    segments_done: int
    audio_seconds: float
    audio_url: str


class BookStatus(BaseModel):
    id: str
    title: str
    author: str | None
    language: str
    voice: str
    state: str
    error: str | None
    segments_total: int
    segments_done: int
    characters_total: int
    characters_done: int
    audio_seconds: float
    characters_per_second: float | None = Field(
        ..., description="Measured throughput: characters said per second since the book started"
    )
    eta_seconds: float | None = Field(..., description="Seconds until done at the measured throughput")
    created: datetime
    started: datetime | None
    finished: datetime | None
    chapters: list[ChapterProgress]
    audio_url: str
    captions_url: str
    index_url: str
    segments_url: str

    _as_utc = field_validator("created", "started", "finished")(as_utc)


class RedoState(BaseModel):
    job_id: str
    state: str
    text: str = Field(..., description="What it says (as the book's sentences are said: normalised, respelled)")


class BookSegment(BaseModel):
    index: int
    chapter: int
    text: str = Field(..., description="What it says now (a redo's new words once it has succeeded)")
    state: str
    is_pause: bool
    audio_seconds: float | None
    audio_url: str
    redo: RedoState | None = Field(..., description="Its newest redo, while it runs and after")


class BookSegments(BaseModel):
    segments: list[BookSegment]
    total: int


class RedoCreated(BaseModel):
    book_id: str
    index: int
    job_id: str
    state: str
    status_url: str


class IndexSentence(BaseModel):
    index: int
    chapter: int
    text: str
    start_ms: int
    end_ms: int


class IndexChapter(BaseModel):
    chapter: int
    title: str
    start_ms: int
    end_ms: int


class BookIndex(BaseModel):
    """Where every sentence and chapter is in the book's audio (GET /books/{id}/audio, whole), for a player."""

    duration_ms: int
    chapters: list[IndexChapter]
    sentences: list[IndexSentence]


class BookList(BaseModel):
    books: list[str]


class DeletedBook(BaseModel):
    id: str
    deleted: bool = True
    jobs: int = Field(..., description="Jobs deleted with it: its own and its redos'")
