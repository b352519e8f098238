"""Chapters from a document's headings (HTML, Markdown) or from `Chapter N` lines (plain text), and the clean-up a
text converted from print needs: page numbers and running headers (a book's title or author repeated on every page)
are not read aloud."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from shared.documents.html_text import Block
from shared.documents.model import Chapter

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|"
    "eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|"
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|last|final"
)
# A plain-text line that starts a chapter: "Chapter 1", "CHAPTER IV.", "Chapter Twelve: The Storm", "Part Two",
# "Book I". A number follows the word (in digits, Roman numerals or words), then the line ends or a title follows a
# separator: "Part of me wanted to stay." is not one.
_CHAPTER_LINE = re.compile(
    rf"^\s*(?:chapter|part|book)\s+(?:\d{{1,4}}|[ivxlcdm]{{1,8}}|(?:{_NUMBER_WORDS})(?:[- ](?:{_NUMBER_WORDS}))?)"
    r"\s*(?:[.:\u2014\u2013-]\s*(?:\S.*)?)?$",
    re.IGNORECASE,
)
# A line that is only a page number: "12", "- 12 -", "Page 12", "[12]".
_PAGE_NUMBER = re.compile(r"^\s*(?:page\s+)?[-\[(]?\s*\d{1,4}\s*[-\])]?\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…:;\"'”’)]\s*$")
_PAGE_DIGITS = re.compile(r"^\d+\s+|\s+\d+$")  # a page number before or after a running header
RUNNING_HEADER_MAX_CHARS = 60
RUNNING_HEADER_MIN_REPEATS = 3


def from_blocks(blocks: Sequence[Block], title: str | None) -> tuple[str | None, list[Chapter]]:
    """Chapters at the document's chapter headings: its top heading level, or the next one down when the top one is
    the book's title (a single heading above several of the next level). Text before the first chapter heading is a
    chapter of its own (`title` or "Opening"). Returns the title the headings give, if any, and the chapters."""
    levels = Counter(b.heading for b in blocks if b.heading)
    if not levels:
        return None, _chapters([(title or "Text", [b.text for b in blocks])])
    top = min(levels)
    book_title = None
    if levels[top] == 1 and any(level > top for level in levels):
        book_title = next(b.text for b in blocks if b.heading == top)
        top = min(level for level in levels if level > top)
    sections: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for block in blocks:
        if block.heading == top:
            current = (block.text, [])
            sections.append(current)
        elif block.heading and block.heading < top:
            continue  # the book's title
        else:
            if current is None:
                current = (title or book_title or "Opening", [])
                sections.append(current)
            current[1].append(block.text)
    return book_title, _chapters(sections)


def from_plain_text(text: str, title: str | None) -> list[Chapter]:
    """Paragraphs are separated by blank lines (a single line break joins lines, as a wrapped text's); a line such
    as `Chapter 3` (alone in its paragraph, with a title after it or not) starts a chapter."""
    sections: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for paragraph in _paragraphs(text):
        first, _, rest = paragraph.partition("\n")
        body = paragraph
        if _CHAPTER_LINE.match(first) and len(first) <= 100:
            current = (" ".join(first.split()), [])
            sections.append(current)
            body = rest
        if not body.strip():
            continue
        if current is None:
            current = (title or "Opening", [])
            sections.append(current)
        current[1].append(" ".join(body.split()))
    return _chapters(sections)


def _paragraphs(text: str) -> Iterable[str]:
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.strip():
            lines.append(line.strip())
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def _chapters(sections: list[tuple[str, list[str]]]) -> list[Chapter]:
    return [Chapter(title, tuple(paragraphs)) for title, paragraphs in sections if paragraphs]


def without_print_noise(chapters: Sequence[Chapter]) -> list[Chapter]:
    """Plain text converted from print, without its page numbers and running headers: short paragraphs without a
    sentence's end that occur at least RUNNING_HEADER_MIN_REPEATS times in the book (a page number before or after
    them ignored), unless a chapter is titled so. A repeated line of dialogue ("Yes.") ends as a sentence does: it
    stays. (Documents with markup mark their page breaks: shared/documents/html_text.py.)"""
    counts = Counter(_header_key(p) for c in chapters for p in c.paragraphs if _may_be_header(p))
    titles = {_header_key(c.title) for c in chapters}
    headers = {key for key, n in counts.items() if n >= RUNNING_HEADER_MIN_REPEATS and key not in titles}
    cleaned = []
    for chapter in chapters:
        kept = tuple(
            p
            for p in chapter.paragraphs
            if not _PAGE_NUMBER.match(p) and not (_may_be_header(p) and _header_key(p) in headers)
        )
        if kept:
            cleaned.append(Chapter(chapter.title, kept, chapter.language))
    return cleaned


def _may_be_header(paragraph: str) -> bool:
    return len(paragraph) <= RUNNING_HEADER_MAX_CHARS and not _SENTENCE_END.search(paragraph)


def _header_key(paragraph: str) -> str:
    return " ".join(_PAGE_DIGITS.sub("", paragraph).lower().split())
