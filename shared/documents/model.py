"""What a document (a book) is once read: its metadata and its chapters of plain paragraphs, ready to be said."""

from __future__ import annotations

from dataclasses import dataclass, field

# Bounds on what a document may hold, checked as it is read (an archive's before anything of it is unpacked).
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024  # an EPUB as sent, with its images
MAX_TEXT_DOCUMENT_BYTES = 10 * 1024 * 1024  # HTML, Markdown or plain text as sent
MAX_UNPACKED_BYTES = 200 * 1024 * 1024  # an EPUB's entries, as its directory declares them (images included)
MAX_PACKAGE_BYTES = 4 * 1024 * 1024  # an EPUB's package file (OPF) or encryption.xml
MAX_TEXT_FILE_BYTES = 10 * 1024 * 1024  # one of an EPUB's content documents (or its table of contents)
MAX_TEXT_FILES_BYTES = 40 * 1024 * 1024  # all of them
MAX_ENTRY_RATIO = 200  # unpacked / packed of one archive entry: text packs 3-10x, a zip bomb thousands of times
MAX_ENTRIES = 10_000
MAX_TEXT_CHARS = 5_000_000  # a whole book's text (War and Peace: 3.2 M characters)
MAX_CHAPTER_CHARS = 1_000_000
MAX_CHAPTERS = 2_000
MAX_COVER_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Chapter:
    title: str
    paragraphs: tuple[str, ...]
    language: str | None = None  # where the document says a chapter's own (xml:lang, lang)

    @property
    def characters(self) -> int:
        return sum(len(p) for p in self.paragraphs)


@dataclass(frozen=True)
class Cover:
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Document:
    title: str | None
    author: str | None
    language: str | None
    chapters: tuple[Chapter, ...]
    cover: Cover | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def characters(self) -> int:
        return sum(c.characters for c in self.chapters)
