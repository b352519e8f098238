"""A document in, read: `read_document(data, kind)` for EPUB, Markdown, HTML and plain text, bounded as it is read
(shared/documents/model.py's limits), its print noise (page numbers, running headers) left out."""

from __future__ import annotations

from typing import Literal

from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin

from shared.documents.chapters import from_blocks, from_plain_text, without_print_noise
from shared.documents.epub_reader import read_epub
from shared.documents.html_text import read_html
from shared.documents.model import (
    MAX_CHAPTER_CHARS,
    MAX_CHAPTERS,
    MAX_DOCUMENT_BYTES,
    MAX_TEXT_CHARS,
    MAX_TEXT_DOCUMENT_BYTES,
    Document,
)
from shared.errors import DocumentTooLarge, InvalidDocument, NothingToSpeak

DocumentKind = Literal["epub", "markdown", "html", "text"]


def read_document(data: bytes, kind: DocumentKind) -> Document:
    limit = MAX_DOCUMENT_BYTES if kind == "epub" else MAX_TEXT_DOCUMENT_BYTES
    if len(data) > limit:
        raise DocumentTooLarge(f"the document has {len(data)} bytes; at most {limit} are read")
    if kind == "epub":
        return _bounded(read_epub(data))
    if kind == "text":
        chapters = without_print_noise(from_plain_text(_text(data), None))
        return _bounded(Document(None, None, None, tuple(chapters)))
    markdown = MarkdownIt("commonmark").use(footnote_plugin)
    read = read_html(markdown.render(_text(data)).encode() if kind == "markdown" else data)
    book_title, found = from_blocks(read.blocks, read.title)
    return _bounded(Document(read.title or book_title, read.author, read.language, tuple(found)))


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1]
        raise InvalidDocument(f"the document is not UTF-8 text (byte {exc.start}: {bad!r})") from exc
    if len(text) > MAX_TEXT_CHARS:
        raise DocumentTooLarge(f"the document holds {len(text)} characters; at most {MAX_TEXT_CHARS} are read")
    return text


def _bounded(document: Document) -> Document:
    if not document.chapters:
        raise NothingToSpeak("the document has no text to read aloud")
    if len(document.chapters) > MAX_CHAPTERS:
        raise DocumentTooLarge(f"the document has {len(document.chapters)} chapters; at most {MAX_CHAPTERS}")
    for chapter in document.chapters:
        if chapter.characters > MAX_CHAPTER_CHARS:
            raise DocumentTooLarge(
                f"chapter {chapter.title[:80]!r} holds {chapter.characters} characters; at most {MAX_CHAPTER_CHARS}"
            )
    if document.characters > MAX_TEXT_CHARS:
        raise DocumentTooLarge(f"the document holds {document.characters} characters; at most {MAX_TEXT_CHARS}")
    return document
