"""An EPUB (2 or 3) read by EbookLib, once its archive is checked (shared/documents/archive.py): title, author,
language and cover from its package metadata, and a chapter per entry of its table of contents, in its spine's
reading order: a spine document the table of contents does not name continues the chapter before it (a chapter split
over files), one named starts a chapter with the table of contents' title (else its first heading's)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import ebooklib
from ebooklib import epub

from shared.documents.archive import checked_archive
from shared.documents.html_text import read_html
from shared.documents.model import MAX_COVER_BYTES, Chapter, Cover, Document
from shared.errors import InvalidDocument


def read_epub(data: bytes) -> Document:
    checked_archive(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EbookLib warns about its own future defaults
            book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": False})
    except Exception as exc:  # EbookLib raises bare exceptions (KeyError, EpubException, lxml's) for broken packages
        raise InvalidDocument(f"the EPUB cannot be read: {type(exc).__name__}: {exc}") from exc
    language = _meta(book, "language")
    titles = dict(_toc_entries(book.toc))
    chapters: list[Chapter] = []
    for item in _reading_order(book):
        text = read_html(item.get_content())
        paragraphs = tuple(b.text for b in text.blocks if not (b.heading and b.text == titles.get(item.get_name())))
        named = titles.get(item.get_name())
        if not paragraphs:
            continue
        if named is None and chapters:
            last = chapters[-1]
            chapters[-1] = Chapter(last.title, last.paragraphs + paragraphs, last.language)
            continue
        heading = next((b.text for b in text.blocks if b.heading), None)
        title = named or heading or f"Chapter {len(chapters) + 1}"
        if named is None and heading is not None:
            paragraphs = paragraphs[1:] if paragraphs and paragraphs[0] == heading else paragraphs
        chapters.append(Chapter(title, paragraphs, text.language if text.language != language else None))
    return Document(_meta(book, "title"), _meta(book, "creator"), language, tuple(chapters), _cover(book))


def _meta(book: epub.EpubBook, name: str) -> str | None:
    values = book.get_metadata("DC", name)
    value = values[0][0] if values else None
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def _toc_entries(toc: Iterable[Any]) -> Iterable[tuple[str, str]]:
    """(document, title) for each entry of the table of contents, depth first; the first entry of a document wins
    (so a document's title is its first entry's, and later ones pointing into it by fragment are ignored)."""
    seen: set[str] = set()
    for href, title in _flatten(toc):
        document = unquote(href.split("#", 1)[0])
        if document and document not in seen and title.strip():
            seen.add(document)
            yield document, " ".join(title.split())


def _flatten(toc: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for entry in toc:
        if isinstance(entry, tuple) and len(entry) == 2:
            section, children = entry
            if getattr(section, "href", None):
                yield section.href, section.title
            yield from _flatten(children)
        elif isinstance(entry, epub.Link):
            yield entry.href, entry.title
        elif isinstance(entry, list):
            yield from _flatten(entry)


def _reading_order(book: epub.EpubBook) -> Iterable[epub.EpubHtml]:
    """The spine's documents, in order, without the navigation document; EbookLib names documents relative to the
    package file, as the table of contents does."""
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or isinstance(item, epub.EpubNav):
            continue
        if "nav" in getattr(item, "properties", []):
            continue
        yield item


def _cover(book: epub.EpubBook) -> Cover | None:
    candidates = list(book.get_items_of_type(ebooklib.ITEM_COVER))
    meta = book.get_metadata("OPF", "cover")
    if meta and (named := book.get_item_with_id(meta[0][1].get("content", ""))) is not None:
        candidates.append(named)
    candidates += [i for i in book.get_items() if "cover-image" in getattr(i, "properties", [])]
    for item in candidates:
        data = item.get_content()
        media_type = item.media_type or ""
        if media_type.startswith("image/") and 0 < len(data) <= MAX_COVER_BYTES:
            return Cover(media_type, data)
    return None
