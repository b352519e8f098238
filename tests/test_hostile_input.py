"""Hostile requests that need no worker: each answers a clear 4xx in the error contract, quickly.

Each test prints how long the API took (run with `-s` to see the figures; docs/security.md records them).
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from tools.localfarm import DEV_SPEAKER

GOOD = {"text": "Hello.", "language": "en", "speaker_id": DEV_SPEAKER}
ENDPOINTS = ("/tts_stream", "/tts", "/jobs")


def _error(response: Any, status: int, code: str) -> str:
    body = response.get_json()
    assert response.status_code == status, body
    assert response.headers["Content-Type"].startswith("application/json")
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def _timed(what: str, call: Any) -> Any:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    print(f"hostile: {what}: {response.status_code} in {elapsed:.3f} s")
    return response, elapsed


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "text",
    ["\u200b\u200c\u200d\ufeff" * 50, "...!?", "\u200b . , ; \u2060 — …", "😀🎉", "\u0301\u0301"],
    ids=["zero-width", "punctuation", "mixed invisible and punctuation", "emoji", "combining marks"],
)
def test_text_with_nothing_to_speak_is_refused(client, endpoint: str, text: str) -> None:
    message = _error(client.post(endpoint, json={**GOOD, "text": text}), 400, "nothing_to_speak")
    assert "nothing to speak" in message


def test_a_hundred_thousand_dots_are_refused_at_once(client) -> None:
    """The sentence regex was quadratic in a run of dots (100 000 took minutes, holding the GIL); the text has
    nothing to speak either. Both checks are fast now."""
    response, elapsed = _timed(
        "100 000 dots to /jobs", lambda: client.post("/jobs", json={**GOOD, "text": "." * 100_000})
    )
    assert "nothing to speak" in _error(response, 400, "nothing_to_speak")
    assert elapsed < 2


LATENTS = {"gpt_cond_latent": [[0.01] * 64] * 32, "speaker_embedding": [0.01] * 512}


def test_speakable_text_around_a_hundred_thousand_dots_is_split_quickly(client) -> None:
    """Letters around the dots make it speakable: it is split (in linear time) and queued."""
    body = {"text": "Begin" + "." * 99_990 + "end", "language": "en", "speaker_latents": LATENTS}
    response, elapsed = _timed("speakable text with 99 990 dots", lambda: client.post("/jobs", json=body))
    assert response.status_code == 202, response.get_json()
    job = client.delete(f"/jobs/{response.get_json()['id']}").get_json()
    assert job["state"] == "cancelled" and job["progress"]["segments_total"] == 400
    assert elapsed < 2


@pytest.mark.parametrize("page", ["1" * 38, str(2**63), "1000001"])
def test_a_huge_page_number_is_a_400(client, page: str) -> None:
    response, _ = _timed(f"page={page[:12]}...", lambda: client.get("/saved_voices", query_string={"page": page}))
    assert "page" in _error(response, 400, "validation_error")


def test_the_last_allowed_page_is_just_empty(client) -> None:
    response = client.get("/saved_voices", query_string={"page": "1000000", "per_page": "500"})
    assert response.status_code == 200 and response.get_json()["voices"] == []


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_400(client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = '{"text": "Hello.", "language": "en", "speaker_id": ' + nested + "}"
    for endpoint in ENDPOINTS:
        response, elapsed = _timed(
            f"JSON nested {depth} deep to {endpoint}",
            lambda endpoint=endpoint: client.post(endpoint, data=body, content_type="application/json"),
        )
        assert "nested too deeply" in _error(response, 400, "invalid_json")
        assert elapsed < 2
    response = client.post("/save_voice/v1", data=body, content_type="application/json")
    _error(response, 400, "invalid_json")


def test_deeply_nested_json_in_a_form_field_is_a_400(client, make_audio) -> None:
    options = '{"response_format": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post(
        "/clone_speaker",
        data={"wav_file": (io.BytesIO(make_audio()), "a.wav"), "options": options},
        content_type="multipart/form-data",
    )
    assert "form field 'options' is JSON nested too deeply" in _error(response, 400, "invalid_json")


def test_moderately_nested_latents_are_refused_as_latents(client) -> None:
    """Nesting that JSON parses (under Python's recursion limit) reaches the latents check and fails there."""
    nested: Any = 0.5
    for _ in range(900):
        nested = [nested]
    body = {"gpt_cond_latent": nested, "speaker_embedding": [0.1] * 512}
    _error(client.post("/save_voice/deep", json=body), 400, "invalid_latents")


def test_json_bodies_are_capped_well_below_uploads(client) -> None:
    big = json.dumps({**GOOD, "speaker_latents": {"gpt_cond_latent": [0.25] * 1_100_000, "speaker_embedding": []}})
    assert len(big) > 4 * 2**20
    response, elapsed = _timed(
        "5 MB JSON body", lambda: client.post("/jobs", data=big, content_type="application/json")
    )
    assert "larger than 4 MB" in _error(response, 413, "request_too_large")
    assert elapsed < 2


@pytest.mark.parametrize("bad_id", ["abc\n", "abc\r\n", "\nabc", "abc\x00"])
def test_voice_ids_with_control_characters_are_refused(client, make_audio, bad_id: str) -> None:
    """`$` matches before a final newline: "abc\\n" used to pass the slug check (now `\\Z`)."""
    options = json.dumps({"response_format": "save", "save_id": bad_id})
    response = client.post(
        "/clone_speaker",
        data={"wav_file": (io.BytesIO(make_audio()), "a.wav"), "options": options},
        content_type="multipart/form-data",
    )
    _error(response, 400, "invalid_input" if "\x00" in bad_id else "invalid_voice_id")  # NULs: refused first
    # In a path, the router itself refuses some of these (its `.` stops at a newline): a 404, also in the contract.
    quoted = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in bad_id)
    latents = {"gpt_cond_latent": [[0.0] * 64] * 32, "speaker_embedding": [0.0] * 512}
    for response in (
        client.post(f"/save_voice/{quoted}", json=latents),
        client.get(f"/saved_voices/{quoted}"),
        client.delete(f"/saved_voices/{quoted}"),
    ):
        assert (response.status_code, response.get_json()["error"]["code"]) in {
            (400, "invalid_voice_id"),
            (400, "invalid_input"),
            (404, "not_found"),
        }


def test_nul_characters_are_refused_on_both_backends(farm) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL cannot store U+0000 in text: a NUL in an id, a text or a name was a 500 there (not on SQLite)."""
    import requests

    latents = {"gpt_cond_latent": [[0.0] * 64] * 32, "speaker_embedding": [0.0] * 512}
    sent = [
        requests.get(farm.url("/jobs/%00abc"), timeout=10),
        requests.get(farm.url("/stream_status/a%00"), timeout=10),
        requests.delete(farm.url("/jobs/%00"), timeout=10),
        requests.get(farm.url("/saved_voices"), params={"page": "1\x00"}, timeout=10),
        requests.post(farm.url("/jobs"), json={**GOOD, "text": "Hello\x00 there."}, timeout=10),
        requests.post(farm.url("/save_voice/nul-name"), json={**latents, "name": "a\x00b"}, timeout=10),
        requests.post(farm.url("/save_voice/nul-key"), json={**latents, "x\x00": 1}, timeout=10),
    ]
    for response in sent:
        assert response.status_code == 400, (response.request.url, response.text)
        assert "NUL character" in response.json()["error"]["message"]
