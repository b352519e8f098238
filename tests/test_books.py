"""Books on a running farm: an EPUB built here with EbookLib (three chapters, a cover, metadata, footnotes and markup
noise) sent to POST /books becomes one bulk job; its M4B and MP3 have the chapters at the places the book's index
gives, its tags, cover, length (the sentences' audio plus the configured pauses) and loudness; its captions cover
every sentence once, in order; one sentence said again changes that sentence alone and moves what follows by the
difference in its length."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import webvtt

from api.book_submission import within
from tests.books import CHAPTERS, HOSTILE, build_epub, loudness, probe
from tests.farms import SHORT_LEASES
from tools.localfarm import DEV_SPEAKER, Farm, wait_for

SAMPLE_RATE = 24000
PARAGRAPH_PAUSE_MS = 300
CHAPTER_PAUSE_MS = 1000
# The dev model's random audio is mostly low frequencies, which K-weighting hardly counts: its peaks stand 22-26 dB
# above its loudness, so one gain brings it to -27 LUFS at most under -1 dBTP (speech: -18 easily).
LOUDNESS = -30.0
# Each chapter of the test EPUB: its title, then two paragraphs; a pause after each paragraph but a chapter's last,
# and after each chapter but the last.
PAUSES_MS = 3 * 2 * PARAGRAPH_PAUSE_MS + 2 * CHAPTER_PAUSE_MS
OPTIONS = {
    "voice": DEV_SPEAKER,
    "paragraph_pause_ms": PARAGRAPH_PAUSE_MS,
    "chapter_pause_ms": CHAPTER_PAUSE_MS,
    "loudness_lufs": LOUDNESS,
}


def send_book(farm: Farm, data: bytes, options: dict[str, Any], name: str = "town.epub") -> requests.Response:
    return requests.post(
        farm.url("/books"),
        files={"file": (name, data, "application/epub+zip")},
        data={"options": json.dumps(options)},
        timeout=60,
    )


def finished_book(farm: Farm, book_id: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        status: dict[str, Any] = requests.get(farm.url(f"/books/{book_id}"), timeout=10).json()
        assert status["state"] not in ("failed", "cancelled"), status
        return status if status["state"] == "succeeded" else {}

    return wait_for(done, timeout, f"book {book_id} done", 0.5)


@pytest.fixture
def town(farm: Farm) -> dict[str, Any]:
    """The EPUB's book, finished: its status, index and segments."""
    sent = send_book(farm, build_epub(), OPTIONS)
    assert sent.status_code == 202, sent.text
    created = sent.json()
    assert created["chapters"] == 3 and created["priority"] == "bulk"
    status = finished_book(farm, created["id"])
    index = requests.get(farm.url(f"/books/{created['id']}/index"), timeout=30).json()
    segments = requests.get(farm.url(f"/books/{created['id']}/segments"), timeout=30).json()["segments"]
    return {"id": created["id"], "status": status, "index": index, "segments": segments}


def test_an_epub_becomes_an_audiobook_with_chapters_tags_cover_length_loudness_and_captions(town, farm) -> None:
    """One book for all of it: the farm is reset between tests, and a book takes a while to say."""
    _read_into_chapters_of_sentences_with_progress_per_chapter(town)
    for fmt in ("m4b", "mp3"):
        _audiobook_has_its_chapters_tags_cover_length_and_loudness(town, farm, fmt)
    _opus_wav_and_one_chapter_are_as_long_as_the_index_says(town, farm)
    _captions_cover_every_sentence_once_in_order_inside_the_audio(town, farm)


def _read_into_chapters_of_sentences_with_progress_per_chapter(town: dict[str, Any]) -> None:
    status = town["status"]
    assert status["title"] == "A Quiet Town" and status["author"] == "Jane Writer" and status["language"] == "en"
    assert [c["title"] for c in status["chapters"]] == [title for title, _ in CHAPTERS]
    assert all(c["state"] == "succeeded" and c["segments_done"] == c["segments_total"] for c in status["chapters"])
    assert status["segments_done"] == status["segments_total"] == len(town["segments"])
    assert status["eta_seconds"] == 0 and status["characters_per_second"] > 0
    said = " ".join(s["text"] for s in town["segments"])
    for title, (first, second) in CHAPTERS:
        assert title in said and first in said and second in said
    # The footnote, the script, the navigation and the page number are not read; the footnote markers neither.
    for noise in ("footnote", "never said", "Back to top", "12", "late.1", "Then*"):
        assert noise not in said


def _chapter_starts(found: dict[str, Any]) -> list[int]:
    return [round(float(c["start_time"]) * 1000) for c in found["chapters"]]


def _audiobook_has_its_chapters_tags_cover_length_and_loudness(town: dict[str, Any], farm: Farm, fmt: str) -> None:
    suffix = f".{fmt}"
    response = requests.get(farm.url(f"/books/{town['id']}/audio"), params={"format": fmt}, timeout=120)
    assert response.status_code == 200, response.text
    found = probe(response.content, suffix)
    index = town["index"]
    assert [c["tags"]["title"] for c in found["chapters"]] == [title for title, _ in CHAPTERS]
    assert _chapter_starts(found) == [c["start_ms"] for c in index["chapters"]]
    tags = {k.lower(): v for k, v in found["format"]["tags"].items()}
    assert tags["title"] == "A Quiet Town" and tags["artist"] == "Jane Writer"
    assert [s["disposition"]["attached_pic"] for s in found["streams"] if s["codec_type"] == "video"] == [1]
    # Its length: every sentence's audio and the pauses.
    sentences_ms = sum(s["audio_seconds"] for s in town["segments"]) * 1000
    expected_ms = sentences_ms + PAUSES_MS
    assert index["duration_ms"] == pytest.approx(expected_ms, abs=3)
    assert float(found["format"]["duration"]) * 1000 == pytest.approx(expected_ms, abs=80)  # codec frames
    integrated, _peak = loudness(response.content, suffix)
    assert abs(integrated - LOUDNESS) <= 1.0


def _opus_wav_and_one_chapter_are_as_long_as_the_index_says(town: dict[str, Any], farm: Farm) -> None:
    index = town["index"]
    for fmt, codec, rate in (("opus", "opus", 48000), ("wav", "pcm_s16le", SAMPLE_RATE)):
        response = requests.get(farm.url(f"/books/{town['id']}/audio"), params={"format": fmt}, timeout=120)
        assert response.status_code == 200, response.text
        found = probe(response.content, f".{fmt}")
        (stream,) = found["streams"]
        assert (stream["codec_name"], int(stream["sample_rate"])) == (codec, rate)
        assert float(found["format"]["duration"]) * 1000 == pytest.approx(index["duration_ms"], abs=30)
    second = index["chapters"][1]
    response = requests.get(farm.url(f"/books/{town['id']}/audio"), params={"format": "wav", "chapter": 1}, timeout=60)
    assert float(probe(response.content, ".wav")["format"]["duration"]) * 1000 == pytest.approx(
        second["end_ms"] - second["start_ms"], abs=2
    )


def _captions_cover_every_sentence_once_in_order_inside_the_audio(town: dict[str, Any], farm: Farm) -> None:
    vtt = requests.get(farm.url(f"/books/{town['id']}/captions"), timeout=30)
    assert vtt.status_code == 200 and vtt.headers["Content-Type"].startswith("text/vtt")
    cues = webvtt.from_string(vtt.text).captions
    sentences = town["index"]["sentences"]
    assert [c.text for c in cues] == [s["text"] for s in sentences]
    assert [s["text"] for s in sentences] == [s["text"] for s in town["segments"] if not s["is_pause"]]
    starts = [s["start_ms"] for s in sentences]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(s["end_ms"] <= town["index"]["duration_ms"] for s in sentences)
    srt = requests.get(farm.url(f"/books/{town['id']}/captions"), params={"format": "srt"}, timeout=30)
    assert [c.text for c in webvtt.from_buffer(io.StringIO(srt.text), format="srt").captions] == [c.text for c in cues]


def _segment_audio(farm: Farm, book_id: str, count: int) -> list[bytes]:
    return [requests.get(farm.url(f"/books/{book_id}/segments/{n}/audio"), timeout=30).content for n in range(count)]


def test_a_sentence_said_again_changes_only_its_audio_and_moves_what_follows(farm: Farm) -> None:
    """A book of its own (the shared one stays as it was made): its second chapter's last sentence said again with
    other words."""
    created = send_book(farm, build_epub(noise=False), OPTIONS).json()
    book_id = created["id"]
    finished_book(farm, book_id)
    before_index = requests.get(farm.url(f"/books/{book_id}/index"), timeout=30).json()
    segments = requests.get(farm.url(f"/books/{book_id}/segments"), params={"chapter": 1}, timeout=30).json()
    target = segments["segments"][-1]
    count = requests.get(farm.url(f"/books/{book_id}"), timeout=30).json()["segments_total"]
    before_audio = _segment_audio(farm, book_id, count)

    words = "Its windows were dark, and nobody had lit a lamp in them for many long years."
    redo = requests.post(
        farm.url(f"/books/{book_id}/segments/{target['index']}/redo"), json={"text": words}, timeout=30
    )
    assert redo.status_code == 202, redo.text
    job = farm.wait_for_state(redo.json()["job_id"], ("succeeded",), timeout=120)
    assert job["priority"] == "live"

    after_index = requests.get(farm.url(f"/books/{book_id}/index"), timeout=30).json()
    after_audio = _segment_audio(farm, book_id, count)
    changed = [n for n in range(count) if after_audio[n] != before_audio[n]]
    assert changed == [target["index"]]
    old = next(s for s in before_index["sentences"] if s["index"] == target["index"])
    new = next(s for s in after_index["sentences"] if s["index"] == target["index"])
    assert new["text"] == words and new["start_ms"] == old["start_ms"]
    shift = (new["end_ms"] - new["start_ms"]) - (old["end_ms"] - old["start_ms"])
    assert shift != 0
    moved: Callable[[int, int], bool] = lambda was, now: abs(now - was - shift) <= 1  # noqa: E731 - ms rounding
    assert after_index["chapters"][0] == before_index["chapters"][0]
    assert moved(before_index["chapters"][2]["start_ms"], after_index["chapters"][2]["start_ms"])
    assert moved(before_index["duration_ms"], after_index["duration_ms"])
    m4b = requests.get(farm.url(f"/books/{book_id}/audio"), timeout=120)
    assert _chapter_starts(probe(m4b.content, ".m4b")) == [c["start_ms"] for c in after_index["chapters"]]

    # Said again with a seed: the same seed, the same audio; another seed, another take.
    takes = []
    for seed in (7, 7, 8):
        again = requests.post(farm.url(f"/books/{book_id}/segments/0/redo"), json={"seed": seed}, timeout=30).json()
        farm.wait_for_state(again["job_id"], ("succeeded",), timeout=120)
        takes.append(requests.get(farm.url(f"/books/{book_id}/segments/0/audio"), timeout=30).content)
    assert takes[0] == takes[1] != takes[2]

    deleted = requests.delete(farm.url(f"/books/{book_id}"), timeout=30)
    assert deleted.status_code == 200 and deleted.json()["jobs"] == 5  # the book's job and its four redos
    assert requests.get(farm.url(f"/books/{book_id}"), timeout=30).status_code == 404
    assert requests.get(farm.url(f"/jobs/{redo.json()['job_id']}"), timeout=30).status_code == 404


def _api_processes(farm: Farm) -> list[int]:
    """The API's gunicorn master and its workers."""
    assert farm.api is not None
    children = Path(f"/proc/{farm.api.pid}/task/{farm.api.pid}/children").read_text().split()
    return [farm.api.pid, *(int(pid) for pid in children)]


def _peak_rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_document_is_refused_by_the_endpoint_fast_with_its_error_and_bounded_memory(farm, case) -> None:
    make, error, words = HOSTILE[case]
    data = make()
    processes = _api_processes(farm)
    for pid in processes:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak resident size starts again from now
    started = time.perf_counter()
    response = send_book(farm, data, OPTIONS)
    took = time.perf_counter() - started
    assert response.status_code == error.status, response.text
    body = response.json()["error"]
    assert body["code"] == error.code and words in body["message"], body
    assert took < 1.0, f"{case}: refused after {took:.2f} s"
    # What the API may hold beyond the document: its archive directory and the files it had checked.
    peaks = [_peak_rss_mib(pid) for pid in processes]
    rss = [_rss_mib(pid) for pid in processes]
    grown = max(peak - now for peak, now in zip(peaks, rss, strict=True))
    assert grown < len(data) / 2**20 + 60, f"{case}: {grown:.0f} MiB above the resident size at peak"


def _rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_book_survives_a_worker_killed_and_the_api_restarted_mid_book(farm_with) -> None:
    farm = farm_with(**SHORT_LEASES)  # one worker, leases that lapse in seconds
    book_id = send_book(farm, build_epub(noise=False), OPTIONS).json()["id"]
    farm.start_worker()
    farm.wait_for_workers(2)

    def mid_book() -> list[dict[str, Any]]:
        status = requests.get(farm.url(f"/books/{book_id}"), timeout=10).json()
        holders = farm.workers_on(book_id)
        return holders if status["segments_done"] >= 1 and holders else []

    victim = wait_for(mid_book, 120, "a worker mid-book")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    farm.restart_api()
    status = finished_book(farm, book_id)
    segments = farm.job(book_id)["segments"]
    assert max(s["attempts"] for s in segments) >= 2  # the killed worker's segment was said again elsewhere
    index = requests.get(farm.url(f"/books/{book_id}/index"), timeout=30).json()
    assert len(index["sentences"]) == status["segments_total"]  # every sentence has its audio
    sentences_ms = sum(s["audio_samples"] for s in segments) / SAMPLE_RATE * 1000
    assert index["duration_ms"] == pytest.approx(
        sentences_ms + 3 * 2 * PARAGRAPH_PAUSE_MS + 2 * CHAPTER_PAUSE_MS, abs=3
    )
    m4b = requests.get(farm.url(f"/books/{book_id}/audio"), timeout=120)
    assert m4b.status_code == 200 and len(probe(m4b.content, ".m4b")["chapters"]) == 3


def test_a_paragraph_longer_than_a_request_is_said_in_pieces_cut_at_spaces() -> None:
    """A text file without blank lines reads as one paragraph: it goes to the splitter in pieces of at most
    MAX_TEXT_CHARS (a request's bound), nothing lost."""
    paragraph = " ".join(f"word{n}" for n in range(3000))
    pieces = within(paragraph, 1000)
    assert all(len(piece) <= 1000 for piece in pieces) and len(pieces) > 15
    assert " ".join(pieces) == paragraph
    assert within("x" * 2500, 1000) == ["x" * 1000, "x" * 1000, "x" * 500]  # no space: cut where it must


LATENTS = {"gpt_cond_latent": [[0.01] * 64] * 32, "speaker_embedding": [0.01] * 512}
MARKDOWN = "# A Quiet Town\n\n## The Arrival\n\nThe train came in late.\n\n## Die Ankunft\n\nDer Zug kam spät an."


def test_a_chapter_is_said_in_its_own_voice_and_language_and_the_metadata_as_the_options_say(app_with) -> None:
    """In process, no worker (the book stays queued): what the job stores for each chapter's segments."""
    client = app_with()
    for voice in ("narrator", "other"):
        assert client.post(f"/save_voice/{voice}", json=LATENTS).status_code in (200, 201)
    options = {"voice": "narrator", "title": "Two Tongues", "author": "A. Writer"}
    chapters = [{"chapter": 1, "voice": "other", "language": "de", "title": "Arrival, in German"}]
    sent = client.post("/books", json={"text": MARKDOWN, "format": "markdown", **options, "chapters": chapters})
    assert sent.status_code == 202, sent.get_json()
    book = client.get(f"/books/{sent.get_json()['id']}").get_json()
    assert (book["title"], book["author"], book["language"], book["voice"]) == (
        "Two Tongues",
        "A. Writer",
        "en",
        "narrator",
    )
    assert [(c["title"], c["voice"], c["language"]) for c in book["chapters"]] == [
        ("The Arrival", "narrator", "en"),
        ("Arrival, in German", "other", "de"),
    ]
    segments = client.get(f"/jobs/{book['id']}").get_json()["segments"]
    first = book["chapters"][0]["segments_total"]
    assert {(s["voice"], s["language"]) for s in segments[:first]} == {(None, "en")}  # the book's own
    assert {(s["voice"], s["language"]) for s in segments[first:]} == {("other", "de")}
    assert segments[first]["characters"] == len("Arrival, in German")  # the title said first

    bad = {"text": MARKDOWN, "format": "markdown", "voice": "narrator", "chapters": [{"chapter": 5}]}
    refused = client.post("/books", json=bad)
    assert refused.status_code == 400 and "the document has 2" in refused.get_json()["error"]["message"]


def test_new_words_for_a_sentence_are_said_as_the_books_are_with_its_lexicons(app_with) -> None:
    client = app_with()
    assert client.post("/save_voice/narrator", json=LATENTS).status_code in (200, 201)
    for name, alias in (("zeta", "Ann-ya"), ("alpha", "Ah-nee-ah")):  # all of them: alpha's first
        entries = [{"grapheme": "Anja", "alias": alias}]
        assert client.put(f"/lexicons/{name}", json={"entries": entries}).status_code == 201
    body = {"text": MARKDOWN, "format": "markdown", "voice": "narrator", "lexicons": ["zeta"]}
    book_id = client.post("/books", json=body).get_json()["id"]
    redo = client.post(f"/books/{book_id}/segments/2/redo", json={"text": "Anja came in late."})
    assert redo.status_code == 202, redo.get_json()
    listed = client.get(f"/books/{book_id}/segments").get_json()["segments"]
    assert listed[2]["redo"]["text"] == "Ann-ya came in late."  # the book's lexicon, not every one of the tenant's
    split = client.post(f"/books/{book_id}/segments/2/redo", json={"text": "One sentence. " * 40})
    assert split.status_code == 400 and "a redo says one sentence" in split.get_json()["error"]["message"]
