"""Books for the tests: an EPUB built with EbookLib (chapters, metadata, a cover, footnotes and markup noise), a
real PNG, and what ffprobe and ffmpeg's EBU R128 meter read from an audiobook file."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

from ebooklib import epub


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
