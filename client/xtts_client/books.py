"""`xtts book`: a document to an audiobook file. The book's id is kept beside the output (`<output>.xtts-book`)
until its audio is written, so that running the same command again after a broken connection (or an interrupted
command) follows the same book instead of sending it again; a connection lost while it waits is retried."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xtts_client.client import JobFailed, XTTSClient
from xtts_client.errors import FarmError, FarmUnreachable

DONE_STATES = ("succeeded", "failed", "cancelled")


def sidecar(output: Path) -> Path:
    return output.with_name(output.name + ".xtts-book")


class ChapterBars:
    """A progress bar per chapter (segments said of its segments), and the book's ETA on the first line."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bars: list[tqdm] = []
        self._book: tqdm | None = None

    def update(self, status: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if self._book is None:
            self._book = tqdm(total=status["segments_total"], file=sys.stderr, desc=status["title"][:40], position=0)
            for n, chapter in enumerate(status["chapters"], start=1):
                desc = f"  {chapter['title'][:36]}"
                self._bars.append(tqdm(total=chapter["segments_total"], file=sys.stderr, desc=desc, position=n))
        eta = status.get("eta_seconds")
        self._book.n = status["segments_done"]
        self._book.set_postfix_str("" if eta is None else f"ETA {eta:.0f} s", refresh=False)
        self._book.refresh()
        for bar, chapter in zip(self._bars, status["chapters"], strict=True):
            bar.n = chapter["segments_done"]
            bar.refresh()

    def note(self, message: str) -> None:
        (tqdm.write if self._book is not None else print)(message, file=sys.stderr)

    def close(self) -> None:
        for bar in [*self._bars, *([self._book] if self._book else [])]:
            bar.close()


def make_book(
    client: XTTSClient,
    document: Path,
    output: Path,
    options: dict[str, Any],
    fmt: str,
    *,
    quiet: bool = False,
    give_up_after: float = 600.0,
    poll_seconds: float = 1.0,
) -> str:
    """Send `document` (or pick up the book an earlier run sent for `output`), follow it, write its audio in `fmt`
    to `output`. Returns the book's id."""
    bars = ChapterBars(enabled=not quiet)
    try:
        book_id = _resumed(client, output, bars) or _sent(client, document, output, options, bars)
        status = _follow(client, book_id, bars, give_up_after, poll_seconds)
    finally:
        bars.close()
    if status["state"] != "succeeded":
        raise JobFailed(status)
    output.write_bytes(client.book_audio(book_id, fmt))
    sidecar(output).unlink(missing_ok=True)
    return book_id


def _resumed(client: XTTSClient, output: Path, bars: ChapterBars) -> str | None:
    kept = sidecar(output)
    if not kept.exists():
        return None
    book_id = str(json.loads(kept.read_text(encoding="utf-8"))["book_id"])
    try:
        client.book(book_id)
    except FarmError as exc:
        if exc.status != 404:
            raise
        bars.note(f"xtts: book {book_id} of an earlier run is gone from the farm: sending the document again")
        return None
    bars.note(f"xtts: following book {book_id}, sent by an earlier run")
    return book_id


def _sent(client: XTTSClient, document: Path, output: Path, options: dict[str, Any], bars: ChapterBars) -> str:
    created = client.submit_book(document, options)
    sidecar(output).write_text(json.dumps({"book_id": created["id"], "url": client.base_url}), encoding="utf-8")
    bars.note(f"xtts: book {created['id']} queued: {created['chapters']} chapters, {created['segments']} segments")
    for warning in created.get("warnings", []):
        bars.note(f"xtts: warning: {warning}")
    return str(created["id"])


def _follow(
    client: XTTSClient, book_id: str, bars: ChapterBars, give_up_after: float, poll_seconds: float
) -> dict[str, Any]:
    """The book's status once it has ended; a lost connection is retried until `give_up_after` seconds pass
    without an answer."""
    last_answer = time.monotonic()
    wait = poll_seconds
    while True:
        try:
            status = client.book(book_id)
        except FarmUnreachable as exc:
            if time.monotonic() - last_answer > give_up_after:
                raise
            bars.note(f"xtts: {exc}; trying again in {wait:.0f} s (book {book_id})")
            _sleep(wait)
            wait = min(wait * 2, 30.0)
            continue
        last_answer, wait = time.monotonic(), poll_seconds
        bars.update(status)
        if status["state"] in DONE_STATES:
            return status
        _sleep(poll_seconds)


_sleep: Callable[[float], None] = time.sleep
