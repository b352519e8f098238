"""Bad input gets a 4xx with a JSON error that names the problem; never a 500."""

from __future__ import annotations

import pytest
import requests

from tools.localfarm import Farm

GOOD = {"text": "Hello.", "language": "en", "speaker_id": "Claribel Dervla"}
ENDPOINTS = ("/tts_stream", "/tts", "/jobs")


def _error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return error


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_empty_text(farm: Farm, endpoint: str) -> None:
    for text in ("", "   \n\t "):
        error = _error(requests.post(farm.url(endpoint), json={**GOOD, "text": text}, timeout=10), 400, "validation_error")
        assert "text is empty" in error["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_language(farm: Farm, endpoint: str) -> None:
    error = _error(requests.post(farm.url(endpoint), json={**GOOD, "language": "xx"}, timeout=10), 400, "unknown_language")
    assert "'xx'" in error["message"] and "en" in error["details"]["supported"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_speaker(farm: Farm, endpoint: str) -> None:
    error = _error(requests.post(farm.url(endpoint), json={**GOOD, "speaker_id": "Nobody Known"}, timeout=10),
                   400, "unknown_speaker")
    assert "'Nobody Known'" in error["message"] and "Claribel Dervla" in error["details"]["builtin_speakers"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_text_over_the_limit(farm: Farm, endpoint: str) -> None:
    error = _error(requests.post(farm.url(endpoint), json={**GOOD, "text": "a" * 100_001}, timeout=30), 413, "text_too_long")
    assert "MAX_TEXT_CHARS=100000" in error["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_json(farm: Farm, endpoint: str) -> None:
    response = requests.post(farm.url(endpoint), data='{"text": "Hello", ', headers={"Content-Type": "application/json"}, timeout=10)
    assert "not valid JSON" in _error(response, 400, "invalid_json")["message"]
    for body in ("[1, 2]", '"text"', "null"):
        response = requests.post(farm.url(endpoint), data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert "must be a JSON object" in _error(response, 400, "validation_error")["message"]
    response = requests.post(farm.url(endpoint), data="text=hello", timeout=10)  # a form, not JSON
    assert "must be a JSON object" in _error(response, 400, "validation_error")["message"]


@pytest.mark.parametrize(("change", "named"), [
    ({"speaker_id": None}, "speaker_id"),
    ({"speaker_id": ""}, "speaker_id"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 0}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"stream_chunk_size": 0}, "stream_chunk_size"),
    ({"speed": 100}, "speed"),
    ({"min_new_tokens": 50, "max_new_tokens": 10}, "min_new_tokens"),
    ({"langauge": "en"}, "langauge"),
])
def test_wrong_fields_are_named(farm: Farm, change: dict, named: str) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    error = _error(requests.post(farm.url("/tts_stream"), json=body, timeout=10), 400, "validation_error")
    assert named in error["message"]


def test_missing_fields_are_named(farm: Farm) -> None:
    error = _error(requests.post(farm.url("/jobs"), json={}, timeout=10), 400, "validation_error")
    for field in ("text", "language"):
        assert f"{field} is required" in error["message"]
    error = _error(requests.post(farm.url("/jobs"), json={"text": "Hi.", "language": "en"}, timeout=10),
                   400, "validation_error")
    assert "exactly one of speaker_id" in error["message"]


def test_bad_cursor(farm: Farm) -> None:
    job = requests.post(farm.url("/jobs"), json={**GOOD, "max_new_tokens": 8, "min_new_tokens": 8}, timeout=10).json()
    for cursor in ("abc", "1-", "-1-2", "1-2-3"):
        response = requests.get(farm.url(f"/jobs/{job['id']}/stream"), params={"cursor": cursor}, timeout=10)
        assert "cursor" in _error(response, 400, "invalid_input")["message"]


def test_unknown_route_and_method(farm: Farm) -> None:
    _error(requests.get(farm.url("/no/such/route"), timeout=10), 404, "not_found")
    _error(requests.get(farm.url("/tts_stream"), timeout=10), 405, "method_not_allowed")
