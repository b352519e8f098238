"""The text of an HTML (or EPUB XHTML) document as a reader hears it: headings and paragraphs, in order, without what
is not read aloud (scripts, styles, navigation, figures' media), footnote markers and the notes themselves, and page
numbers. Parsed by lxml's HTML parser (libxml2); what is left out is found by element and by the semantics EPUB and
ARIA give it (`epub:type`, `role`), never by patterns over the markup."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree
from lxml import html as lxml_html

from shared.errors import InvalidDocument

# Elements whose content is never read aloud.
SILENT = frozenset(
    {
        "head", "script", "style", "noscript", "template", "nav", "aside", "svg", "math", "iframe", "object",
        "embed", "audio", "video", "img", "picture", "canvas", "button", "input", "select", "textarea", "form",
    }
)  # fmt: skip
# Elements that end the paragraph before them and start one of their own.
BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "blockquote", "li", "ul", "ol", "dl", "dd",
        "dt", "pre", "table", "tr", "td", "th", "caption", "figure", "figcaption", "address", "hr", "body",
    }
)  # fmt: skip
HEADINGS = {f"h{n}": n for n in range(1, 7)}
# EPUB 3 structural semantics and DPUB-ARIA roles of notes, note references and page breaks: not read in the flow.
NOTE_TYPES = frozenset(
    {"footnote", "endnote", "rearnote", "note", "footnotes", "endnotes", "rearnotes", "noteref", "pagebreak", "toc"}
)
NOTE_ROLES = frozenset(
    {"doc-footnote", "doc-endnote", "doc-endnotes", "doc-noteref", "doc-pagebreak", "doc-pagelist", "doc-toc"}
)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Block:
    text: str
    heading: int = 0  # 1-6 for a heading, 0 for a paragraph


@dataclass(frozen=True)
class HtmlText:
    title: str | None
    author: str | None
    language: str | None
    blocks: tuple[Block, ...]


def read_html(data: bytes | str) -> HtmlText:
    """Headings and paragraphs of an HTML document, with its title, author (`<meta name="author">`) and language."""
    try:
        root = lxml_html.document_fromstring(data, parser=_parser(data))
    except (etree.ParserError, ValueError) as exc:
        raise InvalidDocument(f"the HTML could not be read: {exc}") from exc
    title = _clean(" ".join(root.xpath("//head/title//text()"))) or None
    authors = root.xpath("//head/meta[@name='author']/@content")
    language = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang") or root.get("xml:lang")
    body = root.find("body")
    blocks: list[Block] = []
    if body is not None:
        _drop_unread(body)
        _Walker(blocks).walk(body)
    return HtmlText(title, _clean(authors[0]) if authors else None, language or None, tuple(blocks))


def _parser(data: bytes | str) -> lxml_html.HTMLParser | None:
    """UTF-8 for bytes that are UTF-8 (libxml2 would take undeclared bytes for Latin-1); else what the document
    declares (its `<meta charset>`), libxml2's own detection."""
    if isinstance(data, bytes):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return lxml_html.HTMLParser(encoding="utf-8")
    return None


def _drop_unread(body: lxml_html.HtmlElement) -> None:
    """Remove what is not read aloud, keeping the text that follows each removed element."""
    doomed = [el for el in body.iter() if isinstance(el.tag, str) and _unread(el)]
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()


def _unread(el: lxml_html.HtmlElement) -> bool:
    if el.tag in SILENT:
        return True
    kinds = set((el.get("epub:type") or el.get("{http://www.idpf.org/2007/ops}type") or "").split())
    if kinds & NOTE_TYPES or (el.get("role") or "") in NOTE_ROLES:
        return True
    classes = set((el.get("class") or "").split())
    if classes & {"footnotes", "footnote-ref"}:  # notes and their markers as Markdown renderers (markdown-it, pandoc)
        return True
    # A superscript that links elsewhere in the book: a note's marker (a superscript without a link, as in m², is
    # text).
    return el.tag == "sup" and any((a.get("href") or "").startswith("#") or ".xhtml#" in (a.get("href") or "")
                                   for a in el.iter("a"))  # fmt: skip


class _Walker:
    """Collects paragraphs: text runs between block boundaries, whitespace collapsed as a browser shows it."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks, self.run = blocks, []  # type: ignore[var-annotated]

    def walk(self, el: lxml_html.HtmlElement) -> None:
        if not isinstance(el.tag, str):  # a comment or a processing instruction: only its tail is text
            self.run.append(el.tail or "")
            return
        level = HEADINGS.get(el.tag, 0)
        if level:
            self.flush()
            if text := _clean(el.text_content()):
                self.blocks.append(Block(text, level))
        else:
            block = el.tag in BLOCKS
            if block:
                self.flush()
            self.run.append(" " if el.tag == "br" else el.text or "")  # a line break inside a paragraph
            for child in el:
                self.walk(child)
            if block:
                self.flush()
        self.run.append(el.tail or "")

    def flush(self) -> None:
        if text := _clean("".join(self.run)):
            self.blocks.append(Block(text))
        self.run = []


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()
