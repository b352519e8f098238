"""Books for the tests: an EPUB built with EbookLib (chapters, metadata, a cover, footnotes and markup noise), a
real PNG, and what ffprobe and ffmpeg's EBU R128 meter read from an audiobook file."""

from __future__ import annotations

import io
import json
import random
import re
import struct
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ebooklib import epub

from shared.documents.model import MAX_CHAPTER_CHARS
from shared.errors import DocumentTooLarge, DrmProtected, FarmError, InvalidDocument


def png(width: int = 8, height: int = 8) -> bytes:
    """A small real PNG (an opaque red square)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


COVER = png()
CHAPTERS = [
    ("The Arrival", ["The train came in late.", "Nobody waited on the platform."]),
    ("The House", ["It stood at the end of the lane.", "Its windows were dark."]),
    ("The Letter", ["A letter lay on the table.", "It was addressed to her."]),
]
NOISE = (
    '<p>{first}<sup><a epub:type="noteref" href="#n1">1</a></sup> Then<sup><a href="#n2">*</a></sup> more, '
    "over 100 m<sup>2</sup>.</p>"
    '<span epub:type="pagebreak" id="p12" title="12">12</span>'
    '<script>alert("never said")</script><style>p {{ color: red }}</style>'
    '<nav><a href="#top">Back to top</a></nav>'
    "<p>{second}</p>"
    '<aside epub:type="footnote" id="n1"><p>A footnote, not read in the flow.</p></aside>'
)


def build_epub(chapters: list[tuple[str, list[str]]] = CHAPTERS, noise: bool = True, cover: bytes = COVER) -> bytes:
    book = epub.EpubBook()
    book.set_identifier("book-1")
    book.set_title("A Quiet Town")
    book.set_language("en")
    book.add_author("Jane Writer")
    book.set_cover("cover.png", cover)
    items = []
    for n, (title, (first, second)) in enumerate(chapters, start=1):
        item = epub.EpubHtml(title=title, file_name=f"chap_{n}.xhtml", lang="en")
        body = NOISE.format(first=first, second=second) if noise else f"<p>{first}</p><p>{second}</p>"
        item.content = f"<h1>{title}</h1>{body}"
        book.add_item(item)
        items.append(item)
    book.toc = [epub.Link(f"chap_{n}.xhtml", title, f"c{n}") for n, (title, _) in enumerate(chapters, start=1)]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def probe(data: bytes, suffix: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=suffix) as file:
        file.write(data)
        file.flush()
        shown = subprocess.run(
            ["ffprobe", "-v", "error", "-show_chapters", "-show_format", "-show_streams", "-of", "json", file.name],
            capture_output=True,
            check=True,
        )
    result: dict[str, Any] = json.loads(shown.stdout)
    return result


def loudness(data: bytes, suffix: str) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) as ffmpeg's ebur128 filter measures the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"book{suffix}"
        path.write_bytes(data)
        done = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true", "-f", "null", "-"],
            capture_output=True,
            check=True,
        )
    summary = done.stderr.decode().rsplit("Summary:", 1)[1]
    integrated = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary)
    assert integrated and peak, summary
    return float(integrated.group(1)), float(peak.group(1))


# --- hostile documents -------------------------------------------------------------------------------------------
def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def with_entries(extra: dict[str, bytes]) -> bytes:
    """The test EPUB with entries added (or replaced)."""
    return with_entries_of(build_epub(noise=False), extra)


def with_entries_of(data: bytes, extra: dict[str, bytes]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    entries = {name: source.read(name) for name in source.namelist()}
    return zip_of({**entries, **extra})


def package_with(manifest: str = "", spine: str = "") -> bytes:
    """The test EPUB with items added to its package's manifest and spine."""
    source = zipfile.ZipFile(io.BytesIO(build_epub(noise=False)))
    opf = source.read("EPUB/content.opf").decode()
    opf = opf.replace("</manifest>", manifest + "</manifest>").replace("</spine>", spine + "</spine>")
    return with_entries({"EPUB/content.opf": opf.encode()})


def bzip2_entry() -> bytes:
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
        lambda: with_entries({"EPUB/bomb.xhtml": b"\0" * (150 * 1024 * 1024)}),
        InvalidDocument,
        "zip bomb",
    ),
    "more unpacked than allowed": (
        lambda: zip_of({f"EPUB/{n}.bin": bytes(70 * 1024 * 1024) for n in range(3)}),
        DocumentTooLarge,
        "unpacks to",
    ),
    "billion laughs": (lambda: with_entries({"EPUB/chap_1.xhtml": BILLION_LAUGHS}), InvalidDocument, "XML entity"),
    "an external entity": (lambda: with_entries({"EPUB/chap_2.xhtml": EXTERNAL_ENTITY}), InvalidDocument, "entity"),
    "a path out of the archive": (lambda: with_entries({"../../etc/evil": b"x"}), InvalidDocument, "leaves"),
    "an absolute path": (lambda: with_entries({"/etc/evil": b"x"}), InvalidDocument, "leaves"),
    "DRM (Adobe ADEPT)": (lambda: with_entries({"META-INF/encryption.xml": ADEPT}), DrmProtected, "DRM"),
    "DRM (rights file)": (lambda: with_entries({"META-INF/rights.xml": b"<rights/>"}), DrmProtected, "DRM"),
    "not a ZIP": (lambda: b"PK\x03\x04 not really", InvalidDocument, "not an EPUB"),
    "bzip2 inside (inflated whole by zipfile)": (bzip2_entry, InvalidDocument, "compression method 12"),
    "a file named by many manifest items": (lambda: package_with(MANY_ITEMS), InvalidDocument, "twice"),
    "DRM (encrypted text said to be a font)": (
        lambda: with_entries({"META-INF/encryption.xml": FONT_METHOD_ON_TEXT}),
        DrmProtected,
        "EPUB/chap_1.xhtml",
    ),
    "a huge chapter": (
        lambda: build_epub([("Long", [prose(MAX_CHAPTER_CHARS + 1000), "end"])], noise=False),
        DocumentTooLarge,
        "chapter 'Long'",
    ),
}
