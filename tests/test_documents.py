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

import pytest
from ebooklib import epub

from shared.documents import Document, read_document
from shared.errors import DocumentTooLarge, FarmError, InvalidDocument, NothingToSpeak
from tests.books import ADEPT, CHAPTERS, COVER, HOSTILE, build_epub, package_with, with_entries, with_entries_of


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
    assert isinstance(read_document(with_entries({"META-INF/encryption.xml": fonts}), "epub"), Document)


def test_a_document_repeated_in_the_spine_is_read_once_and_a_non_linear_one_not_in_the_flow() -> None:
    notes = '<item id="notes" href="notes.xhtml" media-type="application/xhtml+xml"/>'
    data = package_with(notes, '<itemref idref="chapter_0"/>' * 400 + '<itemref idref="notes" linear="no"/>')
    data = with_entries_of(data, {"EPUB/notes.xhtml": b"<html><body><p>Answers, not read.</p></body></html>"})
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
    chapters = read_document(with_entries({"EPUB/toc.ncx": ncx.encode(), "EPUB/nav.xhtml": nav}), "epub").chapters
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
