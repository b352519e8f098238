"""Bad input gets a 4xx with a JSON error that names the problem; never a 500.

Request validation needs no worker, so these tests drive the API in-process with Flask's test client (against
the real Redis and a real database); only the check of built-in speakers needs live workers.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tools.localfarm import DEV_SPEAKER, Farm

GOOD = {"text": "Hello.", "language": "en", "speaker_id": DEV_SPEAKER}
ENDPOINTS = ("/tts_stream", "/tts", "/jobs")


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The error contract, from a test-client or a requests response."""
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert response.status_code == status, body
    assert response.headers["Content-Type"].startswith("application/json")
    error = body["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return dict(error)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_empty_text(client, endpoint: str) -> None:
    for text in ("", "   \n\t "):
        error = _error(client.post(endpoint, json={**GOOD, "text": text}), 400, "validation_error")
        assert "text is empty" in error["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_language(client, endpoint: str) -> None:
    error = _error(client.post(endpoint, json={**GOOD, "language": "xx"}), 400, "unknown_language")
    assert "'xx'" in error["message"] and "en" in error["details"]["supported"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_speaker(farm: Farm, endpoint: str) -> None:
    response = requests.post(farm.url(endpoint), json={**GOOD, "speaker_id": "Nobody Known"}, timeout=10)
    error = _error(response, 400, "unknown_speaker")
    assert "'Nobody Known'" in error["message"] and DEV_SPEAKER in error["details"]["builtin_speakers"]


def test_a_built_in_speaker_cannot_be_checked_without_workers(client) -> None:
    _error(client.post("/jobs", json={**GOOD, "speaker_id": "Nobody Known"}), 503, "no_workers")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_text_over_the_limit(client, endpoint: str) -> None:
    error = _error(client.post(endpoint, json={**GOOD, "text": "a" * 100_001}), 413, "text_too_long")
    assert "MAX_TEXT_CHARS=100000" in error["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_json(client, endpoint: str) -> None:
    response = client.post(endpoint, data='{"text": "Hello", ', content_type="application/json")
    assert "not valid JSON" in _error(response, 400, "invalid_json")["message"]
    for body in ("[1, 2]", '"text"', "null"):
        response = client.post(endpoint, data=body, content_type="application/json")
        assert "must be a JSON object" in _error(response, 400, "validation_error")["message"]
    response = client.post(endpoint, data={"text": "hello"})  # a form, not JSON
    assert "must be a JSON object" in _error(response, 400, "validation_error")["message"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"speaker_id": None}, "speaker_id"),
        ({"speaker_id": ""}, "speaker_id"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stream_chunk_size": 0}, "stream_chunk_size"),
        ({"speed": 100}, "speed"),
        ({"min_new_tokens": 50, "max_new_tokens": 10}, "min_new_tokens"),
        ({"langauge": "en"}, "langauge"),
    ],
)
def test_wrong_fields_are_named(client, change: dict[str, Any], named: str) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    error = _error(client.post("/tts_stream", json=body), 400, "validation_error")
    assert named in error["message"]


def test_missing_fields_are_named(client) -> None:
    error = _error(client.post("/jobs", json={}), 400, "validation_error")
    assert "language is required" in error["message"]
    error = _error(client.post("/jobs", json={"language": "en", "speaker_id": "x"}), 400, "validation_error")
    assert "exactly one of text and segments" in error["message"]
    error = _error(client.post("/jobs", json={"text": "Hi.", "language": "en"}), 400, "validation_error")
    assert "exactly one of speaker_id" in error["message"]


def test_bad_cursor(client) -> None:
    for cursor in ("abc", "1-", "-1-2", "1-2-3-4", "1-2-"):
        response = client.get("/jobs/any-job/stream", query_string={"cursor": cursor})
        assert "cursor" in _error(response, 400, "invalid_cursor")["message"]


def test_an_unknown_job_is_404_on_every_job_endpoint(client) -> None:
    for path in ("/jobs/nope", "/jobs/nope/audio", "/jobs/nope/stream", "/stream_status/nope"):
        _error(client.get(path), 404, "not_found")
    _error(client.delete("/stream_cancel/nope"), 404, "not_found")
    _error(client.delete("/jobs/nope"), 404, "not_found")


def test_unknown_route_and_method(client) -> None:
    _error(client.get("/no/such/route"), 404, "not_found")
    _error(client.get("/tts_stream"), 405, "method_not_allowed")


def test_every_405_lists_the_methods_of_its_route_in_allow(client) -> None:
    """RFC 9110: a 405 carries Allow with the methods the resource supports: those the OpenAPI document lists for
    the path, with HEAD beside GET and OPTIONS, which Flask answers for every route."""
    spec = client.get("/openapi/openapi.json").get_json()
    assert len(spec["paths"]) >= 18
    for path, operations in spec["paths"].items():
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method in {"PATCH", "PUT", "TRACE", "POST", "DELETE"} - {m.upper() for m in operations}:
            response = client.open(url, method=method)
            _error(response, 405, "method_not_allowed")
            allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
            documented = {m.upper() for m in operations} | {"OPTIONS"} | ({"HEAD"} if "get" in operations else set())
            assert allowed == documented, f"{method} {path}"


def test_the_openapi_document_declares_the_error_contract(client) -> None:
    spec = client.get("/openapi/openapi.json").get_json()
    assert "ErrorResponse" in spec["components"]["schemas"]
    validation = spec["paths"]["/tts_stream"]["post"]["responses"]["400"]
    assert validation["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if (path, status) in {("/health", "503"), ("/health/api", "503")} or status == "414":
                    continue  # health answers its own report; gunicorn answers 414 itself, before the API
                if status.startswith(("4", "5")) and "content" in response:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["$ref"].endswith("/ErrorResponse"), f"{method.upper()} {path} {status}"
