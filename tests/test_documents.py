"""Documents read for books (shared/documents/), no service needed: an EPUB built here with EbookLib (three chapters,
a cover, metadata, footnotes and markup noise), Markdown, HTML and plain text into chapters of paragraphs as a
reader says them; and hostile documents (zip bombs, entity expansion, paths out of the archive, huge chapters, DRM)
refused with a clear error, fast, with memory bounded."""

from __future__ import annotations

import io
import random
import time
import tracemalloc
import zipfile
from collections.abc import Callable

import pytest
from ebooklib import epub

from shared.documents import Document, read_document
from shared.documents.model import MAX_CHAPTER_CHARS
from shared.errors import DocumentTooLarge, DrmProtected, FarmError, InvalidDocument, NothingToSpeak
from tests.books import CHAPTERS, COVER, build_epub


def test_an_epub_gives_its_chapters_metadata_and_cover_without_notes_or_markup_noise() -> None:
    document = read_document(build_epub(), "epub")
    assert (document.title, document.author, document.language) == ("A Quiet Town", "Jane Writer", "en")
    assert document.cover is not None and document.cover.data == COVER and document.cover.media_type == "image/png"
    assert [c.title for c in document.chapters] == [title for title, _ in CHAPTERS]
    for chapter, (_, (first, second)) in zip(document.chapters, CHAPTERS, strict=True):
        assert chapter.paragraphs == (f"{first} Then more, over 100 m2.", second)  # a superscript without a link
    said = " ".join(p for c in document.chapters for p in c.paragraphs)
    for absent in ("footnote", "alert", "color", "Back to top", "12", "*", "1 Then"):
        assert absent not in said


def test_a_spine_document_the_table_of_contents_does_not_name_continues_the_chapter_before_it() -> None:
    book = epub.EpubBook()
    book.set_identifier("b")
    book.set_title("Split")
    book.set_language("en")
    first = epub.EpubHtml(title="One", file_name="a.xhtml", content="<h2>One</h2><p>First half.</p>")
    second = epub.EpubHtml(title="", file_name="b.xhtml", content="<p>Second half.</p>")
    third = epub.EpubHtml(title="Two", file_name="c.xhtml", content="<h2>Two</h2><p>Next chapter.</p>")
    for item in (first, second, third):
        book.add_item(item)
    book.toc = [epub.Link("a.xhtml", "One", "1"), epub.Link("c.xhtml", "Two", "2")]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [first, second, third]
    out = io.BytesIO()
    epub.write_epub(out, book)
    chapters = read_document(out.getvalue(), "epub").chapters
    assert [(c.title, c.paragraphs) for c in chapters] == [
        ("One", ("First half.", "Second half.")),
        ("Two", ("Next chapter.",)),
    ]


def test_markdown_chapters_come_from_its_headings_and_its_footnotes_are_not_read() -> None:
    text = (
        "# The Book\n\nBy someone.\n\n## One\n\nA sentence with a note.[^1] And *emphasis*.\n\n"
        "## Two\n\n- a list item\n- another\n\n```\ncode is read as text\n```\n\n[^1]: The note itself.\n"
    )
    document = read_document(text.encode(), "markdown")
    assert document.title == "The Book"
    assert [(c.title, c.paragraphs) for c in document.chapters] == [
        ("The Book", ("By someone.",)),
        ("One", ("A sentence with a note. And emphasis.",)),
        ("Two", ("a list item", "another", "code is read as text")),
    ]


def test_html_chapters_title_author_and_language_come_from_the_document() -> None:
    html = (
        '<html lang="fr"><head><title>Un livre</title><meta name="author" content="Anne Auteur"></head>'
        "<body><nav>Menu</nav><h2>Premier</h2><p>Il était une fois.</p><div>Un texte<br>sur deux lignes.</div>"
        "<h2>Second</h2><p>La fin.</p><script>x()</script></body></html>"
    )
    document = read_document(html.encode(), "html")
    assert (document.title, document.author, document.language) == ("Un livre", "Anne Auteur", "fr")
    assert [(c.title, c.paragraphs) for c in document.chapters] == [
        ("Premier", ("Il était une fois.", "Un texte sur deux lignes.")),
        ("Second", ("La fin.",)),
    ]


def test_plain_text_chapters_start_at_chapter_lines_and_page_numbers_and_running_headers_are_dropped() -> None:
    pages = []
    for n in range(1, 4):
        header = f"A QUIET TOWN {n + 10}"  # a running header with its page number
        pages.append(f'Chapter {n}\n\nThe text of part {n},\nwrapped over two lines.\n\n"Yes."\n\n{header}\n\n{n}')
    text = "A preface.\n\nPart of me wanted to stay.\n\n" + "\n\n".join(pages) + "\n\nBook lovers never sleep alone."
    chapters = [(c.title, c.paragraphs) for c in read_document(text.encode(), "text").chapters]
    body = ("The text of part {n}, wrapped over two lines.", '"Yes."')
    assert chapters == [
        ("Opening", ("A preface.", "Part of me wanted to stay.")),  # "Part of ..." is no chapter line
        ("Chapter 1", (body[0].format(n=1), body[1])),
        ("Chapter 2", (body[0].format(n=2), body[1])),
        ("Chapter 3", (body[0].format(n=3), body[1], "Book lovers never sleep alone.")),
    ]


# --- hostile documents -------------------------------------------------------------------------------------------
def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def _with_entries(extra: dict[str, bytes]) -> bytes:
    """The test EPUB with entries added (or replaced)."""
    return _with_entries_of(build_epub(noise=False), extra)


def _with_entries_of(data: bytes, extra: dict[str, bytes]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    entries = {name: source.read(name) for name in source.namelist()}
    return _zip({**entries, **extra})


def _package_with(manifest: str = "", spine: str = "") -> bytes:
    """The test EPUB with items added to its package's manifest and spine."""
    source = zipfile.ZipFile(io.BytesIO(build_epub(noise=False)))
    opf = source.read("EPUB/content.opf").decode()
    opf = opf.replace("</manifest>", manifest + "</manifest>").replace("</spine>", spine + "</spine>")
    return _with_entries({"EPUB/content.opf": opf.encode()})


def _bzip2_entry() -> bytes:
    source = zipfile.ZipFile(io.BytesIO(build_epub(noise=False)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in source.namelist():
            method = zipfile.ZIP_BZIP2 if name.endswith("chap_1.xhtml") else zipfile.ZIP_DEFLATED
            archive.writestr(name, source.read(name), compress_type=method)
    return out.getvalue()


MANY_ITEMS = "".join(f'<item id="x{n}" href="chap_1.xhtml" media-type="application/xhtml+xml"/>' for n in range(100))


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
        for i in range(1, 10)
    )
    + b']><html xmlns="http://www.w3.org/1999/xhtml"><body><p>&lol9;</p></body></html>'
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    b'<html xmlns="http://www.w3.org/1999/xhtml"><body><p>&secret;</p></body></html>'
)
ADEPT = (
    b'<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
    b'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
    b'<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
    b'<enc:CipherData><enc:CipherReference URI="EPUB/chap_1.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'
)
FONT_METHOD_ON_TEXT = ADEPT.replace(
    b'Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"', b'Algorithm="http://www.idpf.org/2008/embedding"'
)


def prose(characters: int) -> str:
    """Text that packs as text does (a few times), not as a run of one word would (hundreds of times: a zip bomb)."""
    words = ["the", "house", "stood", "at", "end", "of", "a", "long", "lane", "dark", "window", "letter", "morning"]
    text = " ".join(random.Random(0).choices(words, k=characters // 4))
    return text[:characters]


HOSTILE: dict[str, tuple[Callable[[], bytes], type[FarmError], str]] = {
    "a zip bomb": (
        lambda: _with_entries({"EPUB/bomb.xhtml": b"\0" * (150 * 1024 * 1024)}),
        InvalidDocument,
        "zip bomb",
    ),
    "more unpacked than allowed": (
        lambda: _zip({f"EPUB/{n}.bin": bytes(70 * 1024 * 1024) for n in range(3)}),
        DocumentTooLarge,
        "unpacks to",
    ),
    "billion laughs": (lambda: _with_entries({"EPUB/chap_1.xhtml": BILLION_LAUGHS}), InvalidDocument, "XML entity"),
    "an external entity": (lambda: _with_entries({"EPUB/chap_2.xhtml": EXTERNAL_ENTITY}), InvalidDocument, "entity"),
    "a path out of the archive": (lambda: _with_entries({"../../etc/evil": b"x"}), InvalidDocument, "leaves"),
    "an absolute path": (lambda: _with_entries({"/etc/evil": b"x"}), InvalidDocument, "leaves"),
    "DRM (Adobe ADEPT)": (lambda: _with_entries({"META-INF/encryption.xml": ADEPT}), DrmProtected, "DRM"),
    "DRM (rights file)": (lambda: _with_entries({"META-INF/rights.xml": b"<rights/>"}), DrmProtected, "DRM"),
    "not a ZIP": (lambda: b"PK\x03\x04 not really", InvalidDocument, "not an EPUB"),
    "bzip2 inside (inflated whole by zipfile)": (_bzip2_entry, InvalidDocument, "compression method 12"),
    "a file named by many manifest items": (lambda: _package_with(MANY_ITEMS), InvalidDocument, "twice"),
    "DRM (encrypted text said to be a font)": (
        lambda: _with_entries({"META-INF/encryption.xml": FONT_METHOD_ON_TEXT}),
        DrmProtected,
        "EPUB/chap_1.xhtml",
    ),
    "a huge chapter": (
        lambda: build_epub([("Long", [prose(MAX_CHAPTER_CHARS + 1000), "end"])], noise=False),
        DocumentTooLarge,
        "chapter 'Long'",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_epub_is_refused_fast_with_its_error_and_bounded_memory(case: str) -> None:
    make, error, words = HOSTILE[case]
    data = make()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error) as refused:
            read_document(data, "epub")
        took = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert words in refused.value.message, refused.value.message
    assert took < 1.0, f"{case}: refused after {took:.2f} s"
    # What reading may hold beyond the document itself: the archive's directory and the files it had checked.
    assert peak < len(data) + 40 * 1024 * 1024, f"{case}: {peak / 2**20:.1f} MiB at peak"
    print(f"{case}: {refused.value.code} in {took * 1000:.1f} ms, peak {peak / 2**20:.1f} MiB")


def test_font_obfuscation_is_not_drm() -> None:
    fonts = ADEPT.replace(b"http://www.w3.org/2001/04/xmlenc#aes128-cbc", b"http://www.idpf.org/2008/embedding")
    fonts = fonts.replace(b"EPUB/chap_1.xhtml", b"EPUB/fonts/serif.otf")
    assert isinstance(read_document(_with_entries({"META-INF/encryption.xml": fonts}), "epub"), Document)


def test_a_document_repeated_in_the_spine_is_read_once_and_a_non_linear_one_not_in_the_flow() -> None:
    notes = '<item id="notes" href="notes.xhtml" media-type="application/xhtml+xml"/>'
    data = _package_with(notes, '<itemref idref="chapter_0"/>' * 400 + '<itemref idref="notes" linear="no"/>')
    data = _with_entries_of(data, {"EPUB/notes.xhtml": b"<html><body><p>Answers, not read.</p></body></html>"})
    started = time.perf_counter()
    document = read_document(data, "epub")
    assert time.perf_counter() - started < 1.0
    assert [c.title for c in document.chapters] == [title for title, _ in CHAPTERS]
    assert "Answers" not in " ".join(p for c in document.chapters for p in c.paragraphs)


def test_an_epub_whose_table_of_contents_names_nothing_has_a_chapter_at_each_heading() -> None:
    source = zipfile.ZipFile(io.BytesIO(build_epub(noise=False)))
    ncx = source.read("EPUB/toc.ncx").decode()
    ncx = ncx[: ncx.index("<navMap>")] + "<navMap/>" + ncx[ncx.index("</navMap>") + len("</navMap>") :]
    nav = b'<html xmlns="http://www.w3.org/1999/xhtml"><body><nav epub:type="toc"><ol/></nav></body></html>'
    chapters = read_document(_with_entries({"EPUB/toc.ncx": ncx.encode(), "EPUB/nav.xhtml": nav}), "epub").chapters
    assert [c.title for c in chapters] == [title for title, _ in CHAPTERS]


@pytest.mark.parametrize(
    ("data", "kind", "error"),
    [
        (b"\xff\xfe not utf-8", "text", InvalidDocument),
        (b"\n\n   \n", "text", NothingToSpeak),
        (b"<html><body><script>x</script></body></html>", "html", NothingToSpeak),
        (b"x" * (50 * 1024 * 1024 + 1), "text", DocumentTooLarge),
    ],
)
def test_a_document_with_nothing_to_read_or_too_much_is_refused(data: bytes, kind: str, error: type) -> None:
    with pytest.raises(error):
        read_document(data, kind)  # type: ignore[arg-type]


def test_a_corrupted_epub_is_read_or_refused_with_the_error_contract_never_anything_else() -> None:
    """Bytes of a valid EPUB overwritten at random places (deflate streams, headers, the directory's offsets): each
    is a document or a FarmError (a 4xx once an endpoint reads it), never another exception (a 500)."""
    valid = build_epub()
    chooser = random.Random(7)
    outcomes: dict[str, int] = {}
    for _ in range(300):
        data = bytearray(valid)
        for _ in range(chooser.randint(1, 4)):
            at = chooser.randrange(len(data))
            data[at : at + 4] = chooser.randbytes(4)
        try:
            read_document(bytes(data), "epub")
            outcome = "read"
        except FarmError as exc:
            outcome = exc.code
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(outcomes)
    assert outcomes.get("invalid_document", 0) > 0  # the corruption did reach the checks
