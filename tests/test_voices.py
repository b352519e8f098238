"""Voices: cloning on the workers, saved voices any worker can use, per-worker caches, and every error."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid

import numpy as np
import pytest
import requests
from sqlalchemy import text

from shared.db import make_engine
from tests.audio import read_wav, sse_events, xtts_samples
from tools.localfarm import DEV_SPEAKER, ROOT, Farm, tts_body, wait_for

WIDTH = 64  # GPT width of the dev checkpoint
SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)


def _clone(farm: Farm, files: list[tuple[str, bytes]], options: dict | None = None) -> requests.Response:
    data = {"options": json.dumps(options)} if options is not None else {}
    return requests.post(farm.url("/clone_speaker"), files=[("wav_file", f) for f in files], data=data, timeout=180)


def _error(response, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    """The error message, from a requests response or a Flask test-client response."""
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert response.status_code == status, body
    error = body["error"]
    assert error["code"] == code, error
    return error["message"]


def _voice_id() -> str:
    return f"v-{uuid.uuid4().hex[:10]}"


def _job(farm: Farm, speaker_id: str, sentences: int = 1, tokens: int = 10) -> dict:
    body = {
        "text": " ".join([SENTENCE] * sentences),
        "language": "en",
        "speaker_id": speaker_id,
        "min_new_tokens": tokens,
        "max_new_tokens": tokens,
    }
    job = requests.post(farm.url("/jobs"), json=body, timeout=30)
    assert job.status_code == 202, job.text
    return farm.wait_for_state(job.json()["id"], ("succeeded", "failed"), 180)


def _cache(farm: Farm) -> dict:
    return requests.get(farm.url("/cache/stats"), timeout=10).json()


def test_clone_wav_as_json_then_reuse_the_stored_result(farm: Farm, make_audio) -> None:
    audio = make_audio("wav", freq=233)
    first = _clone(farm, [("me.wav", audio)])
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["gpt_cond_latent"]) == 32 and len(body["gpt_cond_latent"][0]) == WIDTH
    assert len(body["speaker_embedding"]) == 512
    assert body["reused"] is False and body["reference_seconds"] == pytest.approx(3.0, abs=0.05)

    again = _clone(farm, [("same-audio-other-name.wav", audio)]).json()
    assert again["reused"] is True and again["content_hash"] == body["content_hash"]
    assert again["gpt_cond_latent"] == body["gpt_cond_latent"]


def test_clone_mp3_and_save_then_speak_with_it_on_both_workers(farm: Farm, make_audio) -> None:
    voice_id = _voice_id()
    response = _clone(
        farm,
        [("me.mp3", make_audio("mp3", freq=247))],
        {"response_format": "save", "save_id": voice_id, "name": "Me", "description": "from an mp3"},
    )
    assert response.status_code == 200, response.text
    voice = response.json()["voice"]
    assert voice["id"] == voice_id and voice["name"] == "Me" and voice["source"] == "clone"

    listed = requests.get(farm.url(f"/saved_voices/{voice_id}"), params={"include_latents": "true"}, timeout=10).json()
    assert listed["description"] == "from an mp3" and len(listed["speaker_embedding"]) == 512

    status = _job(farm, voice_id, sentences=4)
    assert status["state"] == "succeeded", status["error"]
    assert status["speaker"] == {"kind": "saved", "id": voice_id}
    # The segments fanned out: a worker process that did not clone the voice synthesized with it too.
    assert len({s["worker"] for s in status["segments"]}) == 2


@pytest.mark.parametrize(
    ("fmt", "rate", "channels"), [("flac", 48000, 2), ("ogg", 48000, 1), ("m4a", 44100, 2), ("wav", 8000, 2)]
)
def test_other_formats_rates_and_channels(farm: Farm, make_audio, fmt: str, rate: int, channels: int) -> None:
    response = _clone(farm, [(f"ref.{fmt}", make_audio(fmt, rate=rate, channels=channels, freq=300))])
    assert response.status_code == 200, response.text
    assert len(response.json()["speaker_embedding"]) == 512


def test_several_reference_files(farm: Farm, make_audio) -> None:
    response = _clone(farm, [("a.wav", make_audio("wav", freq=260)), ("b.mp3", make_audio("mp3", freq=270))])
    assert response.status_code == 200, response.text
    assert response.json()["reference_seconds"] == pytest.approx(6.0, abs=0.1)


def test_inline_latents_synthesize(farm: Farm, make_audio) -> None:
    latents = _clone(farm, [("me.wav", make_audio("wav", freq=233))]).json()
    body = {
        "text": "Inline latents.",
        "language": "en",
        "min_new_tokens": 10,
        "max_new_tokens": 10,
        "speaker_latents": {
            "gpt_cond_latent": latents["gpt_cond_latent"],
            "speaker_embedding": latents["speaker_embedding"],
        },
    }
    response = requests.post(farm.url("/tts"), json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert read_wav(response.content)[1] > 0
    assert farm.job(response.headers["X-Session-Id"])["speaker"]["kind"] == "inline"


def test_cache_hits_and_misses_across_two_workers_and_clear_reaches_both(farm: Farm, make_audio) -> None:
    voice_id = _voice_id()
    _clone(farm, [("me.wav", make_audio("wav", freq=281))], {"response_format": "save", "save_id": voice_id})
    cleared = requests.post(farm.url("/cache/clear"), timeout=30).json()
    assert len(cleared["cleared"]) == 2 and cleared["pending"] == []
    before = _cache(farm)
    assert before["total"]["size"] == 0 and len(before["workers"]) == 2

    status = _job(farm, voice_id, sentences=4)
    workers = {s["worker"] for s in status["segments"]}
    assert len(workers) == 2
    after = _cache(farm)
    delta = {k: after["total"][k] - before["total"][k] for k in ("hits", "misses")}
    assert delta == {"misses": 2, "hits": 2}  # one miss per worker, then hits
    assert all(w["size"] == 1 for w in after["workers"])

    status = _job(farm, voice_id, sentences=2)
    again = _cache(farm)
    assert again["total"]["misses"] == after["total"]["misses"]
    assert again["total"]["hits"] == after["total"]["hits"] + 2

    cleared = requests.post(farm.url("/cache/clear"), timeout=30).json()
    assert sorted(cleared["cleared"]) == sorted(w["worker"] for w in again["workers"])
    assert all(w["size"] == 0 for w in _cache(farm)["workers"])


def test_overwrite_and_delete_reach_every_worker(farm: Farm, make_audio) -> None:
    voice_id = _voice_id()
    latents = _clone(farm, [("me.wav", make_audio("wav", freq=290))]).json()
    save = {"gpt_cond_latent": latents["gpt_cond_latent"], "speaker_embedding": latents["speaker_embedding"]}
    first = requests.post(farm.url(f"/save_voice/{voice_id}"), json=save, timeout=10)
    assert first.status_code == 201
    _job(farm, voice_id, sentences=2)  # both workers now hold revision 1
    wait_for(lambda: sum(w["size"] for w in _cache(farm)["workers"]) >= 1, 10, "cached copies")

    other = {**save, "speaker_embedding": [-x for x in save["speaker_embedding"]], "overwrite": True}
    second = requests.post(farm.url(f"/save_voice/{voice_id}"), json=other, timeout=10).json()
    assert second["revision"] != first.json()["revision"]
    # Every worker dropped the old copy, and the next job loads the new revision.
    wait_for(lambda: all(w["size"] == 0 for w in _cache(farm)["workers"]), 10, "the eviction to reach every worker")
    misses = _cache(farm)["total"]["misses"]
    assert _job(farm, voice_id, sentences=2)["state"] == "succeeded"
    assert _cache(farm)["total"]["misses"] >= misses + 1

    assert requests.delete(farm.url(f"/saved_voices/{voice_id}"), timeout=10).json() == {"deleted": voice_id}
    wait_for(lambda: all(w["size"] == 0 for w in _cache(farm)["workers"]), 10, "the deletion to reach every worker")
    gone = requests.post(farm.url("/jobs"), json={"text": "Hi.", "language": "en", "speaker_id": voice_id}, timeout=10)
    _error(gone, 400, "unknown_speaker")
    _error(requests.get(farm.url(f"/saved_voices/{voice_id}"), timeout=10), 404, "not_found")


def test_a_voice_deleted_while_its_job_waits_is_never_used(farm: Farm, make_audio) -> None:
    voice_id = _voice_id()
    _clone(farm, [("me.wav", make_audio("wav", freq=301))], {"response_format": "save", "save_id": voice_id})
    slots = sum(w["batch"]["max"] for w in farm.live_workers())  # every batch slot busy: the job has to wait
    blockers = [
        requests.post(
            farm.url("/jobs"),
            json={
                "text": "Busy.",
                "language": "en",
                "speaker_id": DEV_SPEAKER,
                "min_new_tokens": 40,
                "max_new_tokens": 40,
            },
            timeout=10,
        ).json()
        for _ in range(slots)
    ]
    waiting = requests.post(
        farm.url("/jobs"),
        json={"text": "Hi.", "language": "en", "speaker_id": voice_id, "min_new_tokens": 10, "max_new_tokens": 10},
        timeout=10,
    ).json()
    requests.delete(farm.url(f"/saved_voices/{voice_id}"), timeout=10)
    status = farm.wait_for_state(waiting["id"], ("succeeded", "failed"), 120)
    assert status["state"] == "failed" and "no longer exists" in status["error"]
    assert status["segments"][0]["attempts"] == 1  # a deleted voice is not worth retrying
    for blocker in blockers:
        farm.wait_for_state(blocker["id"], ("succeeded",), 120)


def test_saved_voices_are_paged(farm: Farm, make_audio) -> None:
    latents = _clone(farm, [("me.wav", make_audio("wav", freq=233))]).json()
    save = {"gpt_cond_latent": latents["gpt_cond_latent"], "speaker_embedding": latents["speaker_embedding"]}
    prefix = uuid.uuid4().hex[:6]
    for i in range(3):
        assert requests.post(farm.url(f"/save_voice/p{prefix}-{i}"), json=save, timeout=10).status_code == 201
    everything = requests.get(farm.url("/saved_voices"), params={"per_page": 500}, timeout=10).json()
    ours = [v["id"] for v in everything["voices"] if v["id"].startswith(f"p{prefix}")]
    assert ours == [f"p{prefix}-{i}" for i in range(3)] and everything["total"] >= 3
    page = requests.get(farm.url("/saved_voices"), params={"per_page": 2, "page": 1}, timeout=10).json()
    assert len(page["voices"]) == 2 and page["page"] == 1 and page["per_page"] == 2
    _error(requests.get(farm.url("/saved_voices"), params={"per_page": 0}, timeout=10), 400, "validation_error")


# --- errors in uploads (point 2) ---------------------------------------------------------------------


def _upload(client, files: list[tuple[str, bytes]], options: str | None = None):  # type: ignore[no-untyped-def]
    data: dict = {"wav_file": [(io.BytesIO(content), name) for name, content in files]}
    if options is not None:
        data["options"] = options
    return client.post("/clone_speaker", data=data, content_type="multipart/form-data")


def test_upload_errors(client, make_audio) -> None:
    """Checked in the API before any worker is involved (Flask's test client, no farm)."""
    no_file = client.post("/clone_speaker", data={"options": "{}"}, content_type="multipart/form-data")
    assert "wav_file is required" in _error(no_file, 400, "validation_error")
    assert "not audio" in _error(
        _upload(client, [("notes.wav", b"this is a text file, not audio" * 100)]), 400, "not_audio"
    )
    too_large = _upload(client, [("big.wav", make_audio("wav", seconds=60, rate=22050))])  # 2.6 MB > MAX_UPLOAD_MB=2
    assert "MAX_UPLOAD_MB=2" in _error(too_large, 413, "request_too_large")
    too_short = _upload(client, [("short.wav", make_audio("wav", seconds=0.3))])
    assert "at least 0.5 s" in _error(too_short, 400, "unusable_audio")
    mostly_silent = _upload(client, [("late.wav", make_audio("wav", seconds=0.3, lead_silence=3.0))])
    assert "at least 0.5 s" in _error(mostly_silent, 400, "unusable_audio")
    too_long = _upload(client, [("long.mp3", make_audio("mp3", seconds=25))])
    assert "limited to 20 s" in _error(too_long, 400, "unusable_audio")
    silent = _upload(client, [("quiet.wav", make_audio("wav", silent=True))])
    assert "silent" in _error(silent, 400, "unusable_audio")
    assert "options is not valid JSON" in _error(
        _upload(client, [("a.wav", make_audio())], "{not json"), 400, "invalid_input"
    )
    no_save_id = _upload(client, [("a.wav", make_audio())], json.dumps({"response_format": "save"}))
    assert "save_id is required" in _error(no_save_id, 400, "invalid_input")
    bad_format = _upload(client, [("a.wav", make_audio())], json.dumps({"response_format": "mp3"}))
    assert "options.response_format" in _error(bad_format, 400, "invalid_input")


def test_a_voice_of_65_gpt_rows_is_saved_kept_and_spoken(farm: Farm) -> None:
    """Latents of another row count than cloning's 32 (65: coqui's official client's default speaker) are stored as
    sent, given back row for row, and synthesize."""
    rows = [[0.01 * ((i + j) % 5) for j in range(WIDTH)] for i in range(65)]
    voice_id = _voice_id()
    body = {"gpt_cond_latent": rows, "speaker_embedding": [0.03] * 512}
    saved = requests.post(farm.url(f"/save_voice/{voice_id}"), json=body, timeout=10)
    assert saved.status_code == 201, saved.text
    kept = requests.get(farm.url(f"/saved_voices/{voice_id}"), params={"include_latents": "true"}, timeout=10).json()
    assert kept["gpt_cond_latent"] == np.float32(rows).tolist()
    job = requests.post(farm.url("/jobs"), json=tts_body("Sixty-five rows.", 12, speaker=voice_id), timeout=10).json()
    status = farm.wait_for_state(job["id"], ("succeeded", "failed"))
    assert status["state"] == "succeeded", status["error"]
    audio = requests.get(farm.url(f"/jobs/{job['id']}/audio"), timeout=30).content
    assert read_wav(audio)[1] == xtts_samples(12)


# --- errors in saved voices (point 3) ----------------------------------------------------------------


def test_saved_voice_errors(farm: Farm, make_audio) -> None:
    latents = _clone(farm, [("me.wav", make_audio("wav", freq=233))]).json()
    good = {"gpt_cond_latent": latents["gpt_cond_latent"], "speaker_embedding": latents["speaker_embedding"]}
    voice_id = _voice_id()
    assert requests.post(farm.url(f"/save_voice/{voice_id}"), json=good, timeout=10).status_code == 201
    assert "overwrite" in _error(
        requests.post(farm.url(f"/save_voice/{voice_id}"), json=good, timeout=10), 409, "voice_exists"
    )
    clone_again = _clone(
        farm, [("me.wav", make_audio("wav", freq=233))], {"response_format": "save", "save_id": voice_id}
    )
    _error(clone_again, 409, "voice_exists")
    assert (
        requests.post(farm.url(f"/save_voice/{voice_id}"), json={**good, "overwrite": True}, timeout=10).status_code
        == 201
    )

    # Unsqueezed latents are accepted too; wrong shapes are refused up front, naming the expected shape.
    unsqueezed = {
        "gpt_cond_latent": [latents["gpt_cond_latent"]],
        "speaker_embedding": [[[x] for x in latents["speaker_embedding"]]],
    }
    assert requests.post(farm.url(f"/save_voice/{_voice_id()}"), json=unsqueezed, timeout=10).status_code == 201
    bad_shape = {**good, "gpt_cond_latent": [row[:10] for row in latents["gpt_cond_latent"]]}
    message = _error(
        requests.post(farm.url(f"/save_voice/{_voice_id()}"), json=bad_shape, timeout=10), 400, "invalid_latents"
    )
    assert "[32, 10]" in message and f"expected [1, rows, {WIDTH}]" in message and "1 to 128 rows" in message
    too_many = {**good, "gpt_cond_latent": latents["gpt_cond_latent"] * 4 + latents["gpt_cond_latent"][:1]}
    message = _error(
        requests.post(farm.url(f"/save_voice/{_voice_id()}"), json=too_many, timeout=10), 400, "invalid_latents"
    )
    assert f"[129, {WIDTH}]" in message
    ragged = {**good, "gpt_cond_latent": [[1.0, 2.0], [3.0]]}
    _error(requests.post(farm.url(f"/save_voice/{_voice_id()}"), json=ragged, timeout=10), 400, "invalid_latents")
    nan = {**good, "speaker_embedding": [float("nan")] * 512}
    body = json.dumps(nan).replace("NaN", "NaN")
    response = requests.post(
        farm.url(f"/save_voice/{_voice_id()}"), data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    embedding = _error(
        requests.post(
            farm.url(f"/save_voice/{_voice_id()}"), json={**good, "speaker_embedding": [0.1] * 100}, timeout=10
        ),
        400,
        "invalid_latents",
    )
    assert "expected [1, 512, 1]" in embedding
    inline = {"text": "Hi.", "language": "en", "speaker_latents": bad_shape}
    _error(requests.post(farm.url("/tts_stream"), json=inline, timeout=10), 400, "invalid_latents")
    _error(requests.get(farm.url("/saved_voices/no-such-voice"), timeout=10), 404, "not_found")
    _error(requests.delete(farm.url("/saved_voices/no-such-voice"), timeout=10), 404, "not_found")


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "..", "x y", "-lead", "a" * 65, "voice.json", "é"])
def test_voice_ids_are_slugs_and_never_touch_the_filesystem(farm: Farm, make_audio, bad_id: str) -> None:
    before = sorted(p.relative_to(farm.log_dir) for p in farm.log_dir.rglob("*") if "voices" in p.parts)
    escapes = (ROOT / "x", ROOT.parent / "x")  # where "../x" would land; compared, since another program may own one
    escapes_before = [path.exists() for path in escapes]
    latents = _clone(farm, [("me.wav", make_audio("wav", freq=233))]).json()
    good = {"gpt_cond_latent": latents["gpt_cond_latent"], "speaker_embedding": latents["speaker_embedding"]}
    quoted = requests.utils.quote(bad_id, safe="").replace(".", "%2E")  # or clients collapse ".."
    for response in (
        requests.post(farm.url(f"/save_voice/{quoted}"), json=good, timeout=10),
        requests.get(farm.url(f"/saved_voices/{quoted}"), timeout=10),
        requests.delete(farm.url(f"/saved_voices/{quoted}"), timeout=10),
        _clone(farm, [("me.wav", make_audio("wav", freq=233))], {"response_format": "save", "save_id": bad_id}),
    ):
        assert "is not valid" in _error(response, 400, "invalid_voice_id")
    after = sorted(p.relative_to(farm.log_dir) for p in farm.log_dir.rglob("*") if "voices" in p.parts)
    assert before == after
    assert [path.exists() for path in escapes] == escapes_before


def test_voices_dir_export_and_import(farm: Farm, make_audio, tmp_path) -> None:
    voice_id = _voice_id()
    _clone(
        farm,
        [("me.wav", make_audio("wav", freq=233))],
        {"response_format": "save", "save_id": voice_id, "name": "Kept"},
    )
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": farm.database_url, "REDIS_URL": farm.redis_url}
    run = [sys.executable, "-m", "voices_store.files"]
    subprocess.run([*run, "export", str(tmp_path)], cwd=ROOT, env=env, check=True, capture_output=True)
    exported = json.loads((tmp_path / f"{voice_id}.json").read_text())
    assert exported["name"] == "Kept" and len(exported["speaker_embedding"]) == 512

    new_id = _voice_id()
    (tmp_path / f"{new_id}.json").write_text(json.dumps(exported))
    (tmp_path / "bad id.json").write_text(json.dumps(exported))
    (tmp_path / "broken.json").write_text("{")
    subprocess.run([*run, "import", str(tmp_path)], cwd=ROOT, env=env, check=True, capture_output=True)
    imported = requests.get(farm.url(f"/saved_voices/{new_id}"), timeout=10).json()
    assert imported["name"] == "Kept" and imported["source"] == "import"
    assert requests.get(farm.url("/saved_voices/broken"), timeout=10).status_code == 404


def test_a_segment_that_keeps_failing_is_retried_then_fails_its_job(farm: Farm, make_audio) -> None:
    """A voice whose stored bytes are corrupt makes the worker fail; the segment is retried, then the job fails."""
    voice_id = _voice_id()
    _clone(farm, [("me.wav", make_audio("wav", freq=233))], {"response_format": "save", "save_id": voice_id})
    engine = make_engine(farm.database_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE voices SET gpt_cond_latent = :junk WHERE id = :id"), {"junk": b"corrupt", "id": voice_id}
        )
    engine.dispose()
    requests.post(farm.url("/cache/clear"), timeout=30)

    body = {
        "text": f"{SENTENCE} {SENTENCE}",
        "language": "en",
        "speaker_id": voice_id,
        "min_new_tokens": 10,
        "max_new_tokens": 10,
    }
    job = requests.post(farm.url("/jobs"), json=body, timeout=30).json()
    with requests.get(farm.url(job["stream_url"]), stream=True, timeout=180) as stream:
        events = list(sse_events(stream))
    assert events[-1].event == "error"
    error = events[-1].data["error"]
    assert error["status"] == 502 and error["code"] == "synthesis_failed" and "ValueError" in error["message"]
    status = farm.wait_for_state(job["id"], ("failed",))
    assert status["error"].startswith("segment ")
    failed = [s for s in status["segments"] if s["state"] == "failed"]
    assert len(failed) >= 1 and failed[0]["attempts"] == 3  # one try and SEGMENT_MAX_RETRIES=2 retries
    assert failed[0]["error"] and "ValueError" in failed[0]["error"]


def test_the_readme_clone_example_works_as_written(farm: Farm, make_audio, tmp_path) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```bash\n(curl -X POST \"http://localhost:8000/clone_speaker\".*?)\n```", readme, re.S)
    assert match, "the README must show the single-server API's /clone_speaker curl example"
    sample = tmp_path / "voice-sample.wav"
    sample.write_bytes(make_audio("wav", freq=311))
    command = (
        match.group(1).replace("http://localhost:8000", farm.base_url).replace("path/to/voice-sample.wav", str(sample))
    )
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180, check=True).stdout
    voice = json.loads(out)["voice"]
    assert voice["id"] == "my-voice" and voice["name"] == "My Voice" and voice["description"] == "Voice description"
    status = _job(farm, "my-voice")
    assert status["state"] == "succeeded" and status["speaker"] == {"kind": "saved", "id": "my-voice"}
