"""API keys and tenants, on a farm that requires keys (as docker-compose.yml runs it).

Two tenants, alice and bob, each with a key; a third key is the operator's (admin). For every voice and job
endpoint: the owner can, the other tenant gets a 404 (never a 403: ids must not leak), and nothing of the owner's
changes. Keys are made and revoked with the operator's command, `python -m api.keys`. On both database backends:
tenants are kept apart by the queries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import text

from shared.db import make_engine
from shared.settings import Settings
from tests.farms import SharedFarm
from tools.localfarm import DEV_SPEAKER, ROOT, Farm, create_api_key

pytestmark = pytest.mark.backends("sqlite", "postgresql")

WIDTH = 64  # the dev checkpoint's GPT width
LATENTS = {"gpt_cond_latent": [[0.02] * WIDTH] * 32, "speaker_embedding": [0.03] * 512}


class Client:
    """requests with one tenant's key."""

    def __init__(self, farm: Farm, key: str | None) -> None:
        self.farm = farm
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.farm.url(path), headers=self.headers, timeout=60, **kwargs)

    def wait_for_state(self, job_id: str, states: tuple[str, ...]) -> dict[str, Any]:
        """The job once in one of `states`, asked with this tenant's key (the farm's own is another tenant's)."""
        return self.farm.wait_for_state(job_id, states, headers=self.headers)


@pytest.fixture
def alice(keyed_farm: SharedFarm) -> Client:
    return Client(keyed_farm, keyed_farm.api_keys["alice"])


@pytest.fixture
def bob(keyed_farm: SharedFarm) -> Client:
    return Client(keyed_farm, keyed_farm.api_keys["bob"])


@pytest.fixture
def operator(keyed_farm: Farm) -> Client:
    return Client(keyed_farm, keyed_farm.headers["Authorization"].removeprefix("Bearer "))


def _code(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def _job_body(text_: str = "A job of one tenant.", **extra: Any) -> dict[str, Any]:
    return {"text": text_, "language": "en", "min_new_tokens": 8, "max_new_tokens": 8, **extra}


ENDPOINTS = [
    ("POST", "/tts_stream"),
    ("POST", "/tts"),
    ("POST", "/jobs"),
    ("GET", "/jobs/some-job"),
    ("GET", "/jobs/some-job/audio"),
    ("GET", "/jobs/some-job/stream"),
    ("DELETE", "/jobs/some-job"),
    ("GET", "/stream_status/some-job"),
    ("DELETE", "/stream_cancel/some-job"),
    ("POST", "/clone_speaker"),
    ("POST", "/save_voice/v1"),
    ("GET", "/saved_voices"),
    ("GET", "/saved_voices/v1"),
    ("DELETE", "/saved_voices/v1"),
    ("GET", "/cache/stats"),
    ("POST", "/cache/clear"),
    ("GET", "/languages"),
    ("GET", "/available_speakers"),
    ("GET", "/studio_speakers"),
    ("POST", "/v1/audio/speech"),
    ("GET", "/v1/models"),
    ("GET", "/v1/audio/voices"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_but_health_needs_a_valid_key(keyed_farm: Farm, method: str, path: str) -> None:
    missing = Client(keyed_farm, None)(method, path)
    assert _code(missing) == (401, "api_key_required")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert _code(Client(keyed_farm, "xtts_not-a-key")(method, path)) == (401, "invalid_api_key")
    basic = requests.request(method, keyed_farm.url(path), auth=("alice", "secret"), timeout=10)
    assert _code(basic) == (401, "api_key_required")


def test_health_and_the_docs_need_no_key_and_show_no_worker_details(keyed_farm: Farm, alice: Client) -> None:
    for who in (Client(keyed_farm, None), alice):
        health = who("GET", "/health").json()
        assert health["status"] == "ok" and health["live_workers"] == 1
        assert health["workers"] is None and health["requests"] is None  # they name the jobs workers run
    assert Client(keyed_farm, None)("GET", "/openapi/openapi.json").status_code == 200


def test_operator_endpoints_need_an_admin_key(alice: Client, operator: Client) -> None:
    assert _code(alice("POST", "/cache/clear")) == (403, "admin_key_required")
    assert _code(alice("GET", "/cache/stats")) == (403, "admin_key_required")
    assert operator("POST", "/cache/clear").status_code == 200
    assert operator("GET", "/cache/stats").status_code == 200
    # /metrics too (a Prometheus scrape sends an admin key as its bearer token); it is not in the OpenAPI document.
    assert _code(alice("GET", "/metrics")) == (403, "admin_key_required")
    assert requests.get(operator.farm.url("/metrics"), timeout=10).status_code == 401
    assert "xtts_workers_live 1.0" in operator("GET", "/metrics").text
    health = operator("GET", "/health").json()
    assert len(health["workers"]) == 1 and health["requests"]["limit"] == Settings().MAX_CONCURRENT_REQUESTS


def test_keys_are_stored_hashed_listed_without_secret_and_revoked_at_once(keyed_farm: Farm) -> None:
    key = create_api_key(keyed_farm.database_url, "carol", "carol-tenant")
    client = Client(keyed_farm, key)
    assert client("GET", "/saved_voices").status_code == 200
    engine = make_engine(keyed_farm.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM api_keys")).all()
    finally:
        engine.dispose()
    assert rows and all(key not in " ".join(map(str, row)) for row in rows)  # only its SHA-256
    cli = [sys.executable, "-m", "api.keys"]
    env = {"DATABASE_URL": keyed_farm.database_url, "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([*cli, "list"], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert "carol" in listed and "carol-tenant" in listed and key not in listed
    subprocess.run([*cli, "revoke", "carol"], cwd=ROOT, env=env, check=True, capture_output=True)
    assert _code(client("GET", "/saved_voices")) == (401, "invalid_api_key")
    again = subprocess.run(
        [*cli, "create", "--name", "carol"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert again.returncode == 2 and "exists already" in again.stderr


def test_voices_belong_to_their_tenant(keyed_farm: Farm, alice: Client, bob: Client) -> None:
    voice = f"narrator-{uuid.uuid4().hex[:6]}"
    saved = alice("POST", f"/save_voice/{voice}", json={**LATENTS, "name": "Alice's narrator"})
    assert saved.status_code == 201, saved.text
    revision = saved.json()["revision"]

    # bob can neither list, read, read the latents of, delete, nor use it.
    assert voice not in [v["id"] for v in bob("GET", "/saved_voices").json()["voices"]]
    assert _code(bob("GET", f"/saved_voices/{voice}")) == (404, "not_found")
    assert _code(bob("GET", f"/saved_voices/{voice}", params={"include_latents": "true"})) == (404, "not_found")
    assert _code(bob("DELETE", f"/saved_voices/{voice}")) == (404, "not_found")
    for endpoint in ("/jobs", "/tts", "/tts_stream"):
        assert _code(bob("POST", endpoint, json=_job_body(speaker_id=voice))) == (400, "unknown_speaker")

    # Nor overwrite it: his voice of the same id is his own, and alice's stays as it was.
    mine = bob("POST", f"/save_voice/{voice}", json={**LATENTS, "name": "Bob's", "overwrite": True})
    assert mine.status_code == 201 and mine.json()["name"] == "Bob's"
    theirs = alice("GET", f"/saved_voices/{voice}").json()
    assert theirs["name"] == "Alice's narrator" and theirs["revision"] == revision
    assert _code(alice("POST", f"/save_voice/{voice}", json=LATENTS)) == (409, "voice_exists")

    # alice's voice synthesizes (the worker finds it by its tenant-qualified key), and is named as she knows it.
    job = alice("POST", "/jobs", json=_job_body(speaker_id=voice)).json()
    status = alice.wait_for_state(job["id"], ("succeeded", "failed"))
    assert status["state"] == "succeeded", status["error"]
    assert status["speaker"] == {"kind": "saved", "id": voice}

    assert bob("DELETE", f"/saved_voices/{voice}").status_code == 200  # his own
    assert alice("GET", f"/saved_voices/{voice}").status_code == 200
    assert alice("DELETE", f"/saved_voices/{voice}").status_code == 200
    assert _code(alice("GET", f"/saved_voices/{voice}")) == (404, "not_found")


def test_lexicons_belong_to_their_tenant(alice: Client, bob: Client) -> None:
    """alice's lexicon respells alice's text only: bob can neither list, read, export, delete nor use it, and his
    lexicon of the same name is his own."""
    name = f"names-{uuid.uuid4().hex[:6]}"
    entries = [{"grapheme": "Nguyen", "alias": "Win"}]
    assert alice("PUT", f"/lexicons/{name}", json={"entries": entries}).status_code == 201
    try:
        assert name not in [x["name"] for x in bob("GET", "/lexicons").json()["lexicons"]]
        for method, path in (
            ("GET", f"/lexicons/{name}"),
            ("GET", f"/lexicons/{name}/pls"),
            ("DELETE", f"/lexicons/{name}"),
        ):
            assert _code(bob(method, path)) == (404, "not_found"), path
        normalize = {"input": "Hello Nguyen.", "language": "en"}
        assert bob("POST", "/v1/text/normalize", json=normalize).json()["segments"][0]["text"] == "Hello Nguyen."
        assert alice("POST", "/v1/text/normalize", json=normalize).json()["segments"][0]["text"] == "Hello Win."
        named = {**normalize, "lexicons": [name]}
        assert _code(bob("POST", "/v1/text/normalize", json=named)) == (400, "unknown_lexicon")
        assert _code(bob("POST", "/tts", json=_job_body(speaker_id=DEV_SPEAKER, lexicons=[name]))) == (
            400,
            "unknown_lexicon",
        )
        mine = bob("PUT", f"/lexicons/{name}", json={"entries": [{"grapheme": "Nguyen", "alias": "New Yen"}]})
        assert mine.status_code == 201  # his own, new
        assert alice("GET", f"/lexicons/{name}").json()["entries"][0]["alias"] == "Win"
    finally:
        alice("DELETE", f"/lexicons/{name}")
        bob("DELETE", f"/lexicons/{name}")


def test_voice_aliases_belong_to_their_tenant(alice: Client, bob: Client) -> None:
    name = f"mine-{uuid.uuid4().hex[:6]}"
    assert alice("PUT", f"/voice_aliases/{name}", json={"voice": DEV_SPEAKER}).status_code == 201
    try:
        assert name not in [a["name"] for a in bob("GET", "/voice_aliases").json()["aliases"]]
        assert name not in [card["id"] for card in bob("GET", "/v1/audio/voices").json()["data"]]
        assert _code(bob("DELETE", f"/voice_aliases/{name}")) == (404, "not_found")
        assert _code(bob("POST", "/tts", json=_job_body(speaker_id=name))) == (400, "unknown_speaker")
        assert alice("POST", "/tts", json=_job_body(speaker_id=name)).status_code == 200
    finally:
        alice("DELETE", f"/voice_aliases/{name}")


def test_a_cloned_voice_belongs_to_its_tenant_and_reuse_stays_within_it(
    keyed_farm: Farm, alice: Client, bob: Client, make_audio
) -> None:
    voice = f"cloned-{uuid.uuid4().hex[:6]}"
    audio = [("wav_file", ("me.wav", make_audio("wav", freq=313)))]
    options = {"options": json.dumps({"response_format": "save", "save_id": voice})}
    first = alice("POST", "/clone_speaker", files=audio, data=options)
    assert first.status_code == 200, first.text
    assert alice("POST", "/clone_speaker", files=audio).json()["reused"] is True
    # bob uploads the same recording: it is cloned for him (nothing tells him alice had it), under his own voice.
    his = bob("POST", "/clone_speaker", files=audio, data=options)
    assert his.status_code == 200, his.text
    assert his.json()["reused"] is False and his.json()["content_hash"] != first.json()["content_hash"]
    assert _code(bob("POST", "/clone_speaker", files=audio, data=options)) == (409, "voice_exists")
    assert [v["id"] for v in alice("GET", "/saved_voices").json()["voices"]].count(voice) == 1


def test_jobs_belong_to_their_tenant(keyed_farm: Farm, alice: Client, bob: Client) -> None:
    done = alice("POST", "/jobs", json=_job_body(speaker_id=DEV_SPEAKER)).json()
    alice.wait_for_state(done["id"], ("succeeded",))
    long_body = _job_body("A long one.", speaker_id=DEV_SPEAKER, min_new_tokens=400, max_new_tokens=400)
    running = alice("POST", "/jobs", json=long_body).json()
    for job in (done, running):
        for method, path in (
            ("GET", f"/jobs/{job['id']}"),
            ("GET", f"/jobs/{job['id']}/audio"),
            ("GET", f"/jobs/{job['id']}/stream"),
            ("HEAD", f"/jobs/{job['id']}/stream"),
            ("GET", f"/stream_status/{job['id']}"),
            ("DELETE", f"/jobs/{job['id']}"),
            ("DELETE", f"/stream_cancel/{job['id']}"),
        ):
            response = bob(method, path)
            assert response.status_code == 404, (method, path)
            if method != "HEAD":  # word for word what a job that does not exist gets
                assert response.json()["error"] == {
                    "status": 404,
                    "code": "not_found",
                    "message": f"no job or session with id {job['id']!r}",
                }
    assert alice("GET", f"/jobs/{running['id']}").json()["state"] in ("queued", "running")  # bob's cancels: nothing
    assert alice("GET", f"/jobs/{done['id']}/audio").status_code == 200
    assert alice("DELETE", f"/jobs/{running['id']}").json()["state"] == "cancelled"


def test_a_stream_job_of_one_tenant_cannot_be_cancelled_by_another(
    keyed_farm: Farm, alice: Client, bob: Client
) -> None:
    body = _job_body("Streamed to alice.", speaker_id=DEV_SPEAKER, min_new_tokens=200, max_new_tokens=200)
    with alice("POST", "/tts_stream", json=body, stream=True) as stream:
        job_id = stream.headers["X-Session-Id"]
        assert _code(bob("DELETE", f"/stream_cancel/{job_id}")) == (404, "not_found")
        assert alice("GET", f"/stream_status/{job_id}").json()["state"] in ("queued", "running")
        assert alice("DELETE", f"/stream_cancel/{job_id}").json()["state"] == "cancelled"
