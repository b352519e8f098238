"""The web page at /ui: its files served safely (Flask's test client), and the page itself driven in headless
Chromium (Debian's `chromium`, through Playwright; scripts/system_deps.sh --browser installs it) against a farm
with API keys on: it asks for a key, plays speech while it is generated, clones, lists and deletes a voice, and
follows a job to its end or cancels it."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.audio import xtts_samples
from tests.books import build_epub, probe
from tests.farms import SharedFarm
from tools.localfarm import DEV_SPEAKER, Farm, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SAMPLE_RATE = 24000
SENTENCE = "The farm speaks this sentence while its workers are still synthesizing the rest of it."
LONG_SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)
WAIT_MS = 180_000  # synthesis and cloning on two shared CPU cores


# --- the files, through Flask's test client -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ],
)
def test_the_page_and_its_files_are_served_with_their_types(client, path: str, content_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_the_page_refers_only_to_its_own_files(client) -> None:
    """Offline: nothing from a CDN or any other host."""
    for path in ("/ui", "/ui/app.js", "/ui/style.css"):
        text = client.get(path).get_data(as_text=True)
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
    page = client.get("/ui").get_data(as_text=True)
    assert 'src="ui/app.js"' in page and 'href="ui/style.css"' in page


def test_the_page_names_its_own_icon(client) -> None:
    """Without an icon of its own, the browser asks for /favicon.ico on every load: a 404 in the console."""
    page = client.get("/ui").get_data(as_text=True)
    icon = re.search(r'<link rel="icon" href="([^"]+)"', page)
    assert icon is not None and icon.group(1) == "ui/favicon.svg"
    served = client.get("/" + icon.group(1))
    assert served.status_code == 200 and served.headers["Content-Type"] == "image/svg+xml"
    assert served.get_data(as_text=True).startswith("<svg ")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/../api/auth.py", 404),
        ("/ui/..%2f__init__.py", 404),
        ("/ui/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/ui/..%5c..%5capi%5cauth.py", 404),
        ("/ui/index.html/../app.js/..", 404),
        ("/ui/webpage.py", 404),
        ("/ui/etc/passwd", 404),
        ("/ui//etc/passwd", 404),
        ("/ui/%00app.js", 400),  # NUL characters are refused before routing, everywhere
        ("/ui/app.js%00.html", 400),
    ],
)
def test_no_other_file_can_be_reached(client, path: str, status: int) -> None:
    response = client.get(path, follow_redirects=True)
    assert response.status_code == status, path
    assert response.get_json()["error"]["status"] == status


def test_ui_with_a_slash_leads_to_the_page_and_no_key_is_needed(app_with) -> None:
    keyed = app_with(API_KEYS_REQUIRED=True)
    assert keyed.get("/languages").status_code == 401  # the API needs a key; the page's files do not
    slash = keyed.get("/ui/")
    assert slash.status_code == 308 and slash.headers["Location"] == "../ui"
    assert keyed.get("/ui").status_code == 200 and keyed.get("/ui/app.js").status_code == 200


def test_the_page_is_linked_from_the_api_docs_but_is_no_api_operation(client) -> None:
    spec = client.get("/openapi/openapi.json").get_json()
    assert not [path for path in spec["paths"] if path.startswith("/ui")]
    assert "(/ui)" in spec["info"]["description"]


# --- the page in headless Chromium, against a farm with keys on ---------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/system_deps.sh --browser (make test does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def web_key(keyed_farm: SharedFarm) -> str:
    return keyed_farm.api_keys["alice"]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()  # its own localStorage: every test starts without a key
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)  # assertions wait as long as actions (5 s by default)
    yield opened
    context.close()


def _api(farm: Farm, key: str, method: str, path: str) -> requests.Response:
    return requests.request(method, farm.url(path), headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _open_with_key(page: Page, farm: Farm, key: str) -> None:
    page.goto(farm.url("/ui"))
    expect(page.get_by_role("alert").filter(has_text="needs an API key")).to_be_visible()
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def test_a_load_with_a_key_logs_no_error_and_no_request_fails(browser: Browser, keyed_farm: Farm, web_key: str) -> None:
    """Opened with its key already stored (as on every visit after the first), the page loads without a console
    error or a failed request: its files, the farm's answers and the icon the browser asks for."""
    context = browser.new_context()
    context.add_init_script(f"localStorage.setItem('xtts-farm-api-key', {web_key!r})")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}"))
    opened.on(
        "response",
        lambda response: errors.append(f"{response.url}: {response.status}") if response.status >= 400 else None,
    )
    try:
        opened.goto(keyed_farm.url("/ui"))
        expect(opened.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        opened.wait_for_load_state("networkidle")  # the icon is asked for after the load (and outside `response`)
        assert errors == []
    finally:
        context.close()


def test_the_page_asks_for_a_key_until_it_gets_a_valid_one(page: Page, keyed_farm: Farm, web_key: str) -> None:
    page.goto(keyed_farm.url("/ui"))
    key_form = page.locator("#key-form")
    expect(key_form).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("needs an API key")
    page.get_by_role("textbox", name="API key").fill("xtts_not-a-key")
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#key-reason")).to_contain_text("not valid")  # the farm's message, asked again
    page.get_by_role("textbox", name="API key").fill(web_key)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(key_form).to_be_hidden()
    assert page.evaluate("localStorage.getItem('xtts-farm-api-key')") == web_key
    # What the farm offers, in the pickers: its languages and built-in speakers.
    expect(page.get_by_label("Language", exact=True)).to_have_value("en")
    languages = page.locator("#language option").all_inner_texts()
    assert languages == _api(keyed_farm, web_key, "GET", "/languages").json()
    speakers = page.locator("#builtin-voices option").all_inner_texts()
    assert DEV_SPEAKER in speakers
    assert speakers == _api(keyed_farm, web_key, "GET", "/available_speakers").json()["speakers"]
    # Reloaded, the page uses the stored key without asking.
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(key_form).to_be_hidden()


def test_speech_plays_while_it_streams_and_every_sample_is_played(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    _bound_tokens(page, "tts_stream", 100)  # 4.6 s of audio, not the dev model's 28 s (see _bound_tokens)
    page.get_by_label("Text", exact=True).fill(f"{SENTENCE} {SENTENCE}")
    page.get_by_label("Voice", exact=True).select_option(DEV_SPEAKER)
    page.get_by_role("button", name="Speak now").click()
    player = page.locator("#player")
    # While audio is still arriving, the player's clock already runs (the AudioContext's, which advances in
    # headless Chromium without a sound card).
    page.wait_for_function(
        "() => { const p = document.getElementById('player').dataset;"
        " return Number(p.playedSeconds) > 0 && Number(p.scheduledSamples) > 0; }"
    )
    expect(player).to_have_attribute("data-state", "played")
    scheduled = int(player.get_attribute("data-scheduled-samples") or 0)
    played = float(player.get_attribute("data-played-seconds") or 0)
    job_id = player.get_attribute("data-job") or ""
    # Every sample the farm produced was scheduled (no byte lost at a read boundary), and played to its end.
    job = _api(keyed_farm, web_key, "GET", f"/stream_status/{job_id}").json()
    assert job["state"] == "succeeded"
    assert scheduled == job["progress"]["audio_samples"] == xtts_samples(100)
    assert played == pytest.approx(scheduled / SAMPLE_RATE, abs=0.002)
    assert int(player.get_attribute("data-ended-samples") or 0) == scheduled  # each block's "ended" event fired
    assert int(player.get_attribute("data-blocks") or 0) > 1  # scheduled as it arrived, not at the end
    expect(page.locator("#elapsed")).to_have_text(f"{scheduled / SAMPLE_RATE:.1f} s")


def test_stopping_the_player_cancels_the_job(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    page.get_by_label("Text", exact=True).fill(" ".join([LONG_SENTENCE] * 12))
    page.get_by_role("button", name="Speak now").click()
    player = page.locator("#player")
    expect(player).to_have_attribute("data-state", "playing")
    page.get_by_role("button", name="Stop").click()
    expect(player).to_have_attribute("data-state", "stopped")
    job_id = player.get_attribute("data-job") or ""

    # The page let go of the stream: the farm sees its client leave and cancels the job.
    wait_for(
        lambda: _api(keyed_farm, web_key, "GET", f"/stream_status/{job_id}").json()["state"] == "cancelled",
        60,
        "the job to be cancelled",
        0.2,
    )


def test_farm_errors_are_shown_to_the_user(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    page.get_by_label("Text", exact=True).fill("!!! ... ???")
    page.get_by_role("button", name="Speak now").click()
    expect(page.locator("#speak-error")).to_contain_text("(nothing_to_speak)")
    expect(page.locator("#player")).to_have_attribute("data-state", "failed")


# A voice's name is the tenant's own text: the page must show it, not run it.
NAME = '<img src=x onerror="window.injected=1">Web Voice'


def test_a_voice_is_cloned_listed_and_deleted(page: Page, keyed_farm: Farm, web_key: str, make_audio) -> None:
    _open_with_key(page, keyed_farm, web_key)
    voice_id = f"web-{uuid.uuid4().hex[:8]}"
    page.get_by_label("Voice sample").set_input_files(
        {"name": "sample.wav", "mimeType": "audio/wav", "buffer": make_audio("wav", freq=311)}
    )
    page.get_by_label("Voice id").fill(voice_id)
    page.get_by_label("Name", exact=True).fill(NAME)
    page.get_by_role("button", name="Clone and save").click()
    expect(page.locator("#clone-status")).to_contain_text(f"Saved voice {voice_id}")
    item = page.locator(f'#saved-voices li[data-voice-id="{voice_id}"]')
    expect(item).to_contain_text(f"{NAME} ({voice_id})")  # shown as text, never parsed as HTML
    assert page.evaluate("window.injected") is None
    expect(page.locator(f'#saved-voice-options option[value="{voice_id}"]')).to_have_count(1)
    assert _api(keyed_farm, web_key, "GET", f"/saved_voices/{voice_id}").json()["name"] == NAME
    # The same id again, without "replace": the farm's 409 shown on the page.
    page.get_by_role("button", name="Clone and save").click()
    expect(page.locator("#clone-error")).to_contain_text("(voice_exists)")

    page.get_by_role("button", name=f"Delete voice {voice_id}").click()
    expect(item).to_have_count(0)
    expect(page.locator(f'#saved-voice-options option[value="{voice_id}"]')).to_have_count(0)
    assert _api(keyed_farm, web_key, "GET", f"/saved_voices/{voice_id}").status_code == 404


def _bound_tokens(page: Page, endpoint: str, tokens: int) -> None:
    """The page's POSTs to `endpoint` go out with max_new_tokens=`tokens` added, all else as the page wrote them. The
    page asks for none: the model's own length, 605 tokens a segment for the dev model, whose noise never stops."""

    def bounded(route: Route) -> None:
        body = route.request.post_data_json
        route.continue_(post_data=json.dumps({**body, "max_new_tokens": tokens}))

    page.route(re.compile(rf".*/{endpoint}$"), bounded)


def test_a_job_is_followed_to_its_end(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    page.get_by_label("Text", exact=True).fill(" ".join([LONG_SENTENCE] * 3))
    page.get_by_role("button", name="Queue as a job").click()
    expect(page.locator("#job-state")).to_have_text("succeeded")
    job_id = page.locator("#job-id").inner_text()
    job = _api(keyed_farm, web_key, "GET", f"/jobs/{job_id}").json()
    assert job["progress"]["segments_total"] == 3 == job["progress"]["segments_done"]
    progress = page.get_by_label("Segments done")
    expect(progress).to_have_attribute("value", "3")
    expect(progress).to_have_attribute("max", "3")
    expect(page.locator("#job-figures")).to_contain_text(
        f"3 of 3 segments, {job['progress']['audio_seconds']:.1f} s of audio"
    )
    expect(page.locator("#job-audio")).to_be_visible()  # the whole WAV, fetched with the key
    duration = page.locator("#job-audio").evaluate(
        "a => new Promise(r => a.readyState >= 1 ? r(a.duration)"
        " : a.addEventListener('loadedmetadata', () => r(a.duration)))"
    )
    assert duration == pytest.approx(job["progress"]["audio_seconds"], abs=0.01)
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()


def test_a_job_is_cancelled_from_the_page(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    page.get_by_label("Text", exact=True).fill(" ".join([LONG_SENTENCE] * 20))
    page.get_by_role("button", name="Queue as a job").click()
    expect(page.locator("#job")).to_be_visible()
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled")
    job_id = page.locator("#job-id").inner_text()
    job = _api(keyed_farm, web_key, "GET", f"/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["progress"]["segments_done"] < 20


PCM_ASSEMBLY = """
() => {
  const header = (extra) => {
    const fmt = [0x66,0x6d,0x74,0x20, 16,0,0,0, 1,0, 1,0, 0xc0,0x5d,0,0, 0x80,0xbb,0,0, 2,0, 16,0];
    const riff = [0x52,0x49,0x46,0x46, 0xff,0xff,0xff,0xff, 0x57,0x41,0x56,0x45];
    const data = [0x64,0x61,0x74,0x61, 0xff,0xff,0xff,0xff];
    return [...riff, ...fmt, ...extra, ...data];
  };
  const samples = [0, 1, -1, 32767, -32768, 258, -258, 12345];
  const pcm = [];
  for (const s of samples) pcm.push(s & 0xff, (s >> 8) & 0xff);
  const results = [];
  // A header with only fmt and data (44 bytes), and one with a LIST chunk of odd length (padded) before data.
  for (const extra of [[], [0x4c,0x49,0x53,0x54, 3,0,0,0, 1,2,3, 0]]) {
    const bytes = Uint8Array.from([...header(extra), ...pcm]);
    for (const size of [1, 2, 3, 5, 7, 43, 45, bytes.length]) {
      const assembler = new window.xttsPage.PcmAssembler();
      const out = [];
      for (let at = 0; at < bytes.length; at += size) out.push(...assembler.push(bytes.subarray(at, at + size)));
      results.push({ size, header: bytes.length - pcm.length, out, rate: assembler.format.sampleRate });
    }
  }
  return { samples, results };
}
"""


def test_reads_split_anywhere_give_the_same_samples(page: Page, keyed_farm: Farm, web_key: str) -> None:
    """A read of the response may end inside the header or inside a sample: nothing is lost or shifted."""
    _open_with_key(page, keyed_farm, web_key)
    found = page.evaluate(PCM_ASSEMBLY)
    assert len(found["results"]) == 16
    for result in found["results"]:
        assert result["out"] == found["samples"], result
        assert result["rate"] == SAMPLE_RATE


def test_the_page_shows_what_will_be_said_segment_by_segment(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    document = (
        '<speak>It costs $5.<break time="300ms"/><lang xml:lang="de">Guten Tag.</lang>'
        '<voice name="Andrew Chipper">Bye.</voice><mark name="m"/></speak>'
    )
    page.get_by_label("Text", exact=True).fill(document)
    page.get_by_label("Voice", exact=True).select_option(DEV_SPEAKER)
    page.get_by_role("button", name="Show what will be said").click()
    said = page.get_by_role("region", name="What will be said").get_by_role("listitem")
    expect(said).to_have_text(
        [
            "It costs five dollars.",
            "(pause of 300 ms)",
            "Guten Tag. [language de]",
            "Bye. [voice Andrew Chipper]",
            "<mark> was left out (the farm sends no mark events)",
        ]
    )
    page.get_by_label("Text", exact=True).fill("<speak>\n<b>broken</speak>")
    page.get_by_role("button", name="Show what will be said").click()
    expect(page.locator("#speak-error")).to_contain_text("(invalid_ssml)")
    expect(page.locator("#speak-error")).to_contain_text("line 2")


def test_two_voices_are_blended_from_the_page(page: Page, keyed_farm: Farm, web_key: str) -> None:
    _open_with_key(page, keyed_farm, web_key)
    _bound_tokens(page, "tts_stream", 16)
    page.get_by_label("Text", exact=True).fill(SENTENCE)
    page.get_by_label("Voice", exact=True).select_option(DEV_SPEAKER)
    page.get_by_label("Blend with").select_option("Andrew Chipper")
    page.get_by_label("Share of the first voice (%)").fill("70")
    page.get_by_role("button", name="Speak now").click()
    player = page.locator("#player")
    expect(player).to_have_attribute("data-state", "played")
    job = _api(keyed_farm, web_key, "GET", f"/jobs/{player.get_attribute('data-job')}").json()
    assert job["speaker"] == {"kind": "blend", "id": f"{DEV_SPEAKER}:0.7+Andrew Chipper:0.3"}
    assert job["state"] == "succeeded" and job["progress"]["audio_samples"] == xtts_samples(16)


def test_a_book_is_made_followed_by_chapter_played_and_a_sentence_redone_from_the_books_tab(
    page: Page, keyed_farm: Farm, web_key: str, tmp_path: Path
) -> None:
    document = tmp_path / "town.epub"
    document.write_bytes(build_epub(noise=False))
    _open_with_key(page, keyed_farm, web_key)
    page.get_by_role("tab", name="Books").click()
    expect(page.get_by_role("tab", name="Books")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("button", name="Speak now")).to_be_hidden()
    page.get_by_label("Document (EPUB, Markdown, HTML or text)").set_input_files(str(document))
    page.get_by_label("Narrator").select_option(DEV_SPEAKER)
    page.get_by_role("button", name="Make the audiobook").click()
    expect(page.locator("#book-state")).to_have_text("succeeded")
    book_id = page.locator("#book-id").inner_text()
    book = _api(keyed_farm, web_key, "GET", f"/books/{book_id}").json()
    assert book["title"] == "A Quiet Town" and book["segments_done"] == book["segments_total"]
    chapters = page.locator("#book-chapters li")
    expect(chapters).to_have_count(3)
    for item, chapter in zip(chapters.all(), book["chapters"], strict=True):
        expect(item).to_contain_text(f"{chapter['title']}: {chapter['segments_total']} of {chapter['segments_total']}")
    expect(page.get_by_label("Sentences done")).to_have_attribute("value", str(book["segments_total"]))

    first = book["chapters"][0]
    page.get_by_role("button", name=f"Play {first['title']}").click()
    expect(page.locator("#book-audio")).to_be_visible()
    duration = page.locator("#book-audio").evaluate(
        "a => new Promise(r => a.readyState >= 1 ? r(a.duration)"
        " : a.addEventListener('loadedmetadata', () => r(a.duration)))"
    )
    # The chapter's sentences and the pauses after its first two paragraphs (its title, its first paragraph).
    assert duration == pytest.approx(first["audio_seconds"] + 2 * 0.6, abs=0.01)
    chapter = _api(keyed_farm, web_key, "GET", f"/books/{book_id}/audio?format=wav&chapter=0").content
    assert duration == pytest.approx(float(probe(chapter, ".wav")["format"]["duration"]), abs=1e-3)  # that chapter
    expect(page.get_by_role("link", name="Download M4B")).to_be_visible()

    sentences = page.locator("#book-sentences li")
    expect(sentences).to_have_count(book["segments_total"])
    page.get_by_role("button", name="Redo sentence 1").click()
    expect(page.locator('#book-sentences li[data-index="1"]')).to_have_attribute("data-redone", "true")
    listed = _api(keyed_farm, web_key, "GET", f"/books/{book_id}/segments").json()["segments"]
    assert [s["redo"] and s["redo"]["state"] for s in listed] == [None, "succeeded"] + [None] * (len(listed) - 2)
