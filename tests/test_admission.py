"""Admission control: per-tenant jobs, audio tokens per request, queued segments farm-wide.

In-process (Flask's test client, real Redis and SQLite, no worker: jobs stay queued), each test with its own
database and limits.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from api.admission import JOBS_RETRY_AFTER_SECONDS, SEGMENTS_RETRY_AFTER_SECONDS, estimate_tokens
from shared.params import SynthesisParams

LATENTS = {"gpt_cond_latent": [[0.01] * 64] * 32, "speaker_embedding": [0.01] * 512}
SENTENCE = "This sentence is long enough to be a segment of its own once it is repeated twice over here. "


def _job(text: str = "Queued behind nobody.", **extra: Any) -> dict[str, Any]:
    return {"text": text, "language": "en", "speaker_latents": LATENTS, **extra}


def _refused(response: Any, status: int, code: str) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def _key(name: str) -> str:
    """A key in the current app's database (the app factory made its settings the process's)."""
    from api.keys import create_key

    return create_key(name)[0]


def test_jobs_per_tenant(app_with) -> None:
    client = app_with(MAX_JOBS_PER_TENANT=2)
    first, second = (client.post("/jobs", json=_job()).get_json() for _ in range(2))
    refused = client.post("/tts", json=_job())
    error = _refused(refused, 429, "too_many_requests")
    assert refused.headers["Retry-After"] == str(JOBS_RETRY_AFTER_SECONDS)
    assert "MAX_JOBS_PER_TENANT=2" in error["message"]
    client.delete(f"/jobs/{first['id']}")  # one ends: there is room again
    assert client.post("/jobs", json=_job()).status_code == 202
    _refused(client.post("/jobs", json=_job()), 429, "too_many_requests")
    assert client.get(f"/jobs/{second['id']}").get_json()["state"] == "queued"


def test_the_job_limit_is_per_tenant(app_with) -> None:
    client = app_with(MAX_JOBS_PER_TENANT=1, API_KEYS_REQUIRED=True)
    alice, bob = ({"Authorization": f"Bearer {_key(name)}"} for name in ("alice", "bob"))
    assert client.post("/jobs", json=_job(), headers=alice).status_code == 202
    _refused(client.post("/jobs", json=_job(), headers=alice), 429, "too_many_requests")
    assert client.post("/jobs", json=_job(), headers=bob).status_code == 202  # bob is not held back by alice


def test_concurrent_submissions_never_exceed_the_limit(app_with) -> None:
    client = app_with(MAX_JOBS_PER_TENANT=3)
    statuses: list[int] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait()
        statuses.append(client.application.test_client().post("/jobs", json=_job()).status_code)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(statuses) == 8 and set(statuses) <= {202, 429}
    admitted = statuses.count(202)
    assert admitted <= 3  # racing requests may both be refused, never both admitted past the limit
    # The refused ones left nothing behind: one by one, exactly the rest of the limit is admitted.
    more = 0
    while client.post("/jobs", json=_job()).status_code == 202:
        more += 1
        assert admitted + more <= 3
    assert admitted + more == 3


def test_queued_segments_farm_wide(app_with) -> None:
    client = app_with(MAX_QUEUED_SEGMENTS=6)
    three_segments = _job(" ".join([SENTENCE * 2] * 3))
    queued = client.post("/jobs", json=three_segments).get_json()
    assert client.get(f"/jobs/{queued['id']}").get_json()["progress"]["segments_total"] == 3
    assert client.post("/jobs", json=three_segments).status_code == 202  # 6 in all
    refused = client.post("/tts_stream", json=_job())
    assert "MAX_QUEUED_SEGMENTS=6" in _refused(refused, 429, "too_many_requests")["message"]
    assert refused.headers["Retry-After"] == str(SEGMENTS_RETRY_AFTER_SECONDS)
    client.delete(f"/jobs/{queued['id']}")
    assert client.post("/jobs", json=_job()).status_code == 202


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (_job("a" * 999), 1500),  # 999 characters at 1.5 tokens each, in 4 segments
        (_job(" ".join([SENTENCE * 2] * 3), min_new_tokens=605), 3 * 605),  # forced to the longest segments
    ],
)
def test_audio_tokens_per_request(app_with, body: dict[str, Any], tokens: int) -> None:
    client = app_with(MAX_TOKENS_PER_REQUEST=1000)
    for endpoint in ("/jobs", "/tts", "/tts_stream"):
        error = _refused(client.post(endpoint, json=body), 413, "too_many_audio_tokens")
        assert error["details"]["estimated_tokens"] >= tokens - 5 and "MAX_TOKENS_PER_REQUEST=1000" in error["message"]
    # Bounded by max_new_tokens, the same long text fits.
    assert client.post("/jobs", json={**body, "max_new_tokens": 200, "min_new_tokens": None}).status_code == 202


def test_the_token_estimate() -> None:
    params = SynthesisParams()
    assert estimate_tokens(["a" * 100], params) == 150
    assert estimate_tokens(["a" * 1000], params) == 605  # one segment never passes the GPT's cap
    assert estimate_tokens(["a" * 100, "b" * 10], SynthesisParams(min_new_tokens=50, max_new_tokens=120)) == 120 + 50


def test_a_books_segments_count_once_sent_so_a_long_book_is_admitted_and_others_still_are(app_with) -> None:
    """A book's segments wait in SQL until its window sends them: a book longer than MAX_QUEUED_SEGMENTS is admitted,
    and does not keep the next request out."""
    client = app_with(MAX_QUEUED_SEGMENTS=6)
    assert client.post("/save_voice/narrator", json=LATENTS).status_code in (200, 201)
    chapters = "\n\n".join(f"## Chapter {n}\n\n{SENTENCE}\n\n{SENTENCE}" for n in range(1, 5))
    book = client.post("/books", json={"text": chapters, "format": "markdown", "voice": "narrator"})
    assert book.status_code == 202, book.get_json()
    assert book.get_json()["segments"] > 6
    assert client.post("/jobs", json=_job(SENTENCE * 3)).status_code == 202
    _refused(client.post("/jobs", json=_job(SENTENCE * 20)), 429, "too_many_requests")  # the limit still holds
