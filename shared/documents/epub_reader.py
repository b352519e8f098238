"""An EPUB (2 or 3) read by EbookLib, from the checked copy of its archive (shared/documents/archive.py): title,
author and language from its package metadata, its cover, and its chapters in the spine's reading order (items
marked non-linear, such as notes or answers, left out). A spine document the table of contents names starts a
chapter with that title; one it does not name continues the chapter before it (a chapter split over files). A book
whose table of contents names none of its documents gets a chapter at each document with a heading."""

from __future__ import annotations

import io
import posixpath
import warnings
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from ebooklib import epub

from shared.documents.archive import Package, checked_package
from shared.documents.html_text import read_html
from shared.documents.model import MAX_CHAPTER_CHARS, MAX_TEXT_CHARS, Chapter, Cover, Document
from shared.errors import DocumentTooLarge, FarmError, InvalidDocument


def read_epub(data: bytes) -> Document:
    package = checked_package(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EbookLib warns about its own future defaults
            book = epub.read_epub(io.BytesIO(package.copy), {"ignore_ncx": False})
        return _document(book, package)
    except FarmError:
        raise
    except Exception as exc:  # EbookLib raises what its parts raise (KeyError, EpubException, lxml's, ...)
        raise InvalidDocument(f"the EPUB cannot be read: {type(exc).__name__}: {exc}") from exc


def _document(book: epub.EpubBook, package: Package) -> Document:
    language = _meta(book, "language")
    base = package.base
    titles = dict(_toc_entries(book.toc if isinstance(book.toc, list | tuple) else [book.toc]))
    chapters = _Chapters(by_heading=not any(_relative(path, base) in titles for path, _ in package.spine))
    for path, linear in package.spine:
        item = book.get_item_with_href(_relative(path, base))
        if not linear or item is None or not isinstance(item, epub.EpubHtml) or isinstance(item, epub.EpubNav):
            continue
        text = read_html(item.get_content())
        chapters.add(titles.get(item.get_name()), [(b.text, b.heading) for b in text.blocks], text.language)
    cover = None
    if package.cover_href and (image := book.get_item_with_href(package.cover_href)) is not None:
        content = image.get_content()
        cover = Cover(image.media_type, content) if content and (image.media_type or "").startswith("image/") else None
    found = tuple(Chapter(t, tuple(p), lang if lang != language else None) for t, p, lang in chapters.done)
    return Document(_meta(book, "title"), _meta(book, "creator"), language, found, cover)


class _Chapters:
    """Chapters as spine documents come, with a running count of the characters (refused as soon as too many)."""

    def __init__(self, by_heading: bool) -> None:
        self.by_heading = by_heading
        self.done: list[tuple[str, list[str], str | None]] = []
        self.characters = 0
        self.chapter_characters = 0

    def add(self, named: str | None, blocks: list[tuple[str, int]], language: str | None) -> None:
        heading = next((text for text, level in blocks if level), None)
        title = named or (heading if self.by_heading else None)
        if title is None and self.done:  # a chapter split over files goes on
            paragraphs = [text for text, _ in blocks]
            self.done[-1][1].extend(paragraphs)
        else:
            title = title or heading or f"Chapter {len(self.done) + 1}"
            paragraphs = [text for text, level in blocks if not (level and text == title)]
            if not paragraphs:
                return  # a page with a title only (a cover, a half-title)
            self.done.append((title, paragraphs, language))
            self.chapter_characters = 0
        added = sum(len(p) for p in paragraphs)
        self.characters += added
        self.chapter_characters += added
        if self.chapter_characters > MAX_CHAPTER_CHARS:
            raise DocumentTooLarge(f"chapter {self.done[-1][0][:80]!r} holds more than {MAX_CHAPTER_CHARS} characters")
        if self.characters > MAX_TEXT_CHARS:
            raise DocumentTooLarge(f"the EPUB holds more than {MAX_TEXT_CHARS} characters")


def _relative(path: str, base: str) -> str:
    return posixpath.normpath(posixpath.relpath(path, base or "."))


def _meta(book: epub.EpubBook, name: str) -> str | None:
    values = book.get_metadata("DC", name)
    value = values[0][0] if values else None
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def _toc_entries(toc: Iterable[Any]) -> Iterable[tuple[str, str]]:
    """(document, title) for each entry of the table of contents, depth first; the first entry of a document wins
    (so a document's title is its first entry's, and later ones pointing into it by fragment are ignored)."""
    seen: set[str] = set()
    for href, title in _flatten(toc):
        document = posixpath.normpath(unquote(href.split("#", 1)[0])) if href else ""
        if document and document != "." and document not in seen and title and title.strip():
            seen.add(document)
            yield document, " ".join(title.split())


def _flatten(toc: Iterable[Any]) -> Iterable[tuple[str | None, str | None]]:
    for entry in toc:
        if isinstance(entry, tuple) and len(entry) == 2:
            section, children = entry
            yield getattr(section, "href", None), getattr(section, "title", None)
            yield from _flatten(children if isinstance(children, list | tuple) else [children])
        elif isinstance(entry, epub.Link | epub.Section):
            yield getattr(entry, "href", None), entry.title
        elif isinstance(entry, list):
            yield from _flatten(entry)
