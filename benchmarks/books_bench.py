"""Books (issue 21): a book of BOOK_CHARACTERS characters (Markdown, five chapters) sent to POST /books on a farm of 1
and then 2 workers (dev model, one torch thread each, every segment pinned to BOOK_TOKENS audio tokens): audio seconds
per wall-clock second from the book's acceptance to its last sentence, and the 2-worker / 1-worker ratio. On the
2-worker farm, live requests played by a real-time listener (benchmarks/player.py) while a book runs, against the same
requests on the idle farm: a book is bulk work and must not slow a live listener. Targets are ratios of this one run.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import requests

from benchmarks.farm_bench import local_farm
from benchmarks.realtime_bench import listen
from tools.localfarm import DEV_SPEAKER, Farm, tts_body

BOOK_CHARACTERS = 50_000
QUICK_CHARACTERS = 8_000
BOOK_TOKENS = 20  # about 0.9 s of audio a sentence: a 50 000-character book is minutes of work on two CPU cores
LIVE_TOKENS = 60
LIVE_TEXT = "A listener is waiting for this sentence while the farm reads a book aloud."
_PROSE = (
    "the house stood at the end of a long lane and its windows were dark when she came home that evening "
    "with a letter from her brother who had gone away to sea many years before"
)


def book_markdown(characters: int, chapters: int = 5) -> str:
    """A Markdown book of about `characters` characters: `chapters` chapters of paragraphs of sentences."""
    rng = random.Random(21)
    vocabulary = _PROSE.split()
    per_chapter = characters // chapters
    parts = []
    for number in range(1, chapters + 1):
        parts.append(f"## Chapter {number}")
        written = 0
        while written < per_chapter:
            sentences = []
            for _ in range(rng.randint(2, 4)):
                words = rng.choices(vocabulary, k=rng.randint(8, 22))
                sentences.append(" ".join(words).capitalize() + ".")
            paragraph = " ".join(sentences)
            parts.append(paragraph)
            written += len(paragraph)
    return "\n\n".join(parts)


def _book_body(text: str) -> dict[str, Any]:
    return {
        "text": text,
        "format": "markdown",
        "voice": DEV_SPEAKER,
        "language": "en",
        "min_new_tokens": BOOK_TOKENS,
        "max_new_tokens": BOOK_TOKENS,
    }


def _finished(farm: Farm, book_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = requests.get(farm.url(f"/books/{book_id}"), timeout=30).json()
        if status["state"] in ("succeeded", "failed", "cancelled"):
            if status["state"] != "succeeded":
                raise RuntimeError(f"book {book_id} {status['state']}: {status['error']}")
            return status
        time.sleep(0.5)
    raise TimeoutError(f"book {book_id} not done in {timeout:.0f} s")


def one_book(farm: Farm, text: str) -> dict[str, Any]:
    started = time.perf_counter()
    created = requests.post(farm.url("/books"), json=_book_body(text), timeout=120)
    created.raise_for_status()
    status = _finished(farm, created.json()["id"], timeout=3600)
    wall = time.perf_counter() - started
    return {
        "characters": status["characters_total"],
        "segments": status["segments_total"],
        "audio_s": status["audio_seconds"],
        "wall_s": round(wall, 1),
        "audio_per_wall": round(status["audio_seconds"] / wall, 3),
    }


def _live(farm: Farm, runs: int) -> dict[str, Any]:
    body = tts_body(LIVE_TEXT, LIVE_TOKENS, 10, response_format="pcm")
    heard = [listen(farm, body).playback for _ in range(runs)]
    played = [p for p in heard if p is not None]
    return {
        "first_audio_s": statistics.median(p.first_audio_s for p in played if p.first_audio_s is not None),
        "stall_max_s": max(p.stall_s for p in played),
        "streams": len(played),
    }


def books(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    text = book_markdown(QUICK_CHARACTERS if quick else BOOK_CHARACTERS)
    rows: list[dict[str, Any]] = []
    live: dict[str, Any] = {}
    for workers in (1, 2):
        with local_farm(workers=workers, threads_per_worker=1) as farm:
            listen(farm, tts_body(LIVE_TEXT, 10, 10, response_format="pcm"))  # warm-up: both workers loaded
            rows.append({"workers": workers, **one_book(farm, text)})
            if workers == 2:
                live["idle"] = _live(farm, 3)
                created = requests.post(farm.url("/books"), json=_book_body(text), timeout=120).json()
                while requests.get(farm.url(f"/books/{created['id']}"), timeout=30).json()["segments_done"] < 2:
                    time.sleep(0.2)
                live["during_book"] = _live(farm, 3)
                requests.delete(farm.url(f"/jobs/{created['id']}"), timeout=30)
    scaling = rows[1]["audio_per_wall"] / rows[0]["audio_per_wall"]
    for situation, measured in live.items():
        rows.append({"live": situation, **measured})
    columns = list(dict.fromkeys(column for row in rows for column in row))  # print_table reads the first row's
    rows = [{column: row.get(column) for column in columns} for row in rows]
    idle, busy = live["idle"], live["during_book"]
    slower = busy["first_audio_s"] / idle["first_audio_s"]
    notes = [
        f"a {rows[0]['characters']}-character book: {rows[0]['audio_per_wall']} audio s per wall s on 1 worker, "
        f"{rows[1]['audio_per_wall']} on 2 (scaling {scaling:.2f}x; target >= 1.6x)",
        f"live first audio while a book runs: {busy['first_audio_s']:.2f} s against {idle['first_audio_s']:.2f} s "
        f"idle ({slower:.2f}x; target <= 1.5x); largest stall {busy['stall_max_s']:.2f} s against "
        f"{idle['stall_max_s']:.2f} s idle (target: no more than idle; the dev model on one CPU thread may be slower "
        "than real time by itself)",
    ]
    extra = {
        "notes": notes,
        "scaling_2_vs_1": round(scaling, 3),
        "live_first_audio_ratio": round(slower, 3),
        "live_stall_added_s": round(busy["stall_max_s"] - idle["stall_max_s"], 3),
    }
    return "Books across workers", rows, extra
