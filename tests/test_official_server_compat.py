"""Clients of coqui's official XTTS streaming server (coqui-ai/xtts-streaming-server) work against the farm unchanged:
its request shape (latents at the top level, `stream_chunk_size` as a string, `add_wav_header`, the clone response
echoed back), GET /studio_speakers, and /tts answering base64 in a JSON string. The flows are those of its test client
(`test/test_streaming.py`) and its Gradio demo (`demo.py`), with their bodies built as they build them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch

from api.schemas.synthesis import TtsRequest
from shared import registry, studio_speakers
from shared.redis_client import get_redis
from tests.audio import parse_stream_wav, read_wav, xtts_samples
from tools.localfarm import DEV_SPEAKER, Farm, wait_for
from voices_store.errors import InvalidLatents
from voices_store.latents import MAX_GPT_ROWS, MAX_GPT_WIDTH, parse_latents

WIDTH = 64  # GPT width of the dev checkpoint
GPT = [[0.01 * (i % 7)] * WIDTH for i in range(32)]
EMBEDDING = [0.02] * 512
TEXT = "It took me quite a long time to develop a voice."


def _official(**extra: Any) -> dict[str, Any]:
    """A body as the official test client sends it: the clone response, plus text, language, stream_chunk_size."""
    return {
        "gpt_cond_latent": GPT,
        "speaker_embedding": EMBEDDING,
        "content_hash": "ab" * 32,
        "reused": False,
        "reference_seconds": 3.0,
        "text": "Hello.",
        "language": "en",
        "stream_chunk_size": "20",
        **extra,
    }


def _error(response: Any, status: int, code: str) -> str:
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


# --- the request shape, without workers -------------------------------------------------------------------------


def test_the_official_shape_becomes_the_farms_own() -> None:
    request = TtsRequest.model_validate(_official(add_wav_header=False))
    assert request.official_shape
    assert request.speaker_latents is not None and request.speaker_id is None
    assert request.speaker_latents.gpt_cond_latent == GPT
    assert request.speaker_latents.speaker_embedding == EMBEDDING
    assert request.synthesis_params()["stream_chunk_size"] == 20
    assert request.add_wav_header is False
    own = TtsRequest.model_validate(
        {
            "text": "Hello.",
            "language": "en",
            "speaker_latents": {"gpt_cond_latent": GPT, "speaker_embedding": EMBEDDING},
        }
    )
    assert not own.official_shape and own.add_wav_header is True
    assert own.synthesis_params() == request.synthesis_params()


def test_an_official_request_is_a_job_with_the_same_inline_voice_as_speaker_latents(app_with) -> None:
    client = app_with()  # its own database: these jobs stay queued (no worker) and are cancelled
    official = client.post("/jobs", json=_official())
    assert official.status_code == 202, official.get_json()
    own = client.post(
        "/jobs",
        json={
            "text": "Hello.",
            "language": "en",
            "speaker_latents": {"gpt_cond_latent": GPT, "speaker_embedding": EMBEDDING},
        },
    )
    assert own.status_code == 202, own.get_json()
    speakers = [client.get(f"/jobs/{r.get_json()['id']}").get_json()["speaker"] for r in (official, own)]
    assert speakers[0] == speakers[1] and speakers[0]["kind"] == "inline"
    for response in (official, own):
        client.delete(f"/jobs/{response.get_json()['id']}")


# coqui's official client ships test/default_speaker.json: a gpt_cond_latent of 65 rows of 1024 (XTTS v1's cloning of
# a 3 s reference), which its server reshapes whatever the row count.
DEFAULT_SPEAKER_ROWS = 65


def _rows(n: int, width: int) -> list[list[float]]:
    return [[0.01 * ((i + j) % 7) for j in range(width)] for i in range(n)]


def test_the_official_clients_default_speaker_shape_is_accepted_as_sent() -> None:
    """The exact shape of default_speaker.json against an XTTS-v2-wide model (1024): kept row for row."""
    gpt = _rows(DEFAULT_SPEAKER_ROWS, 1024)
    request = TtsRequest.model_validate({**_official(), "gpt_cond_latent": gpt})
    assert request.speaker_latents is not None
    latents = parse_latents(request.speaker_latents.gpt_cond_latent, request.speaker_latents.speaker_embedding, 1024)
    assert latents.gpt_cond_latent.shape == (1, DEFAULT_SPEAKER_ROWS, 1024)
    assert latents.to_json()["gpt_cond_latent"] == np.float32(gpt).tolist()
    assert parse_latents([gpt], EMBEDDING, 1024).gpt_cond_latent.shape == (1, DEFAULT_SPEAKER_ROWS, 1024)
    for rows in (1, 32, MAX_GPT_ROWS):
        assert parse_latents(_rows(rows, 8), EMBEDDING, 8).gpt_cond_latent.shape == (1, rows, 8)


@pytest.mark.parametrize(
    ("gpt", "why"),
    [
        (_rows(MAX_GPT_ROWS + 1, 8), f"with 1 to {MAX_GPT_ROWS} rows"),
        ([], "with 1 to"),
        ([[]], "with 1 to"),
        ([_rows(2, 8), _rows(2, 8)], "[2, 2, 8]"),
        (_rows(3, MAX_GPT_WIDTH + 1), f"at most {MAX_GPT_WIDTH} wide"),
    ],
)
def test_latents_beyond_the_documented_bounds_are_refused(gpt: list[Any], why: str) -> None:
    with pytest.raises(InvalidLatents) as refused:
        parse_latents(gpt, EMBEDDING, None)
    assert why in refused.value.message


def test_the_official_stream_client_with_its_65_row_default_speaker_gets_all_its_audio(farm: Farm) -> None:
    """/tts_stream in the official shape with a 65-row latent (as wide as the dev checkpoint's GPT): the whole audio
    of the pinned token count, as raw PCM."""
    tokens = 30
    body = _official(
        gpt_cond_latent=_rows(DEFAULT_SPEAKER_ROWS, WIDTH),
        add_wav_header=False,
        min_new_tokens=tokens,
        max_new_tokens=tokens,
    )
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=180) as response:
        assert response.status_code == 200, response.text
        pcm = b"".join(response.iter_content(chunk_size=4096))
        job_id = response.headers["X-Session-Id"]
    assert len(pcm) == xtts_samples(tokens) * 2
    job = farm.wait_for_state(job_id, ("succeeded",))
    assert job["speaker"]["kind"] == "inline" and job["progress"]["segments_total"] == 1


@pytest.mark.parametrize("endpoint", ["/tts_stream", "/tts"])
def test_official_shape_refusals_name_what_is_wrong(client, endpoint: str) -> None:
    unknown = _error(client.post(endpoint, json=_official(voice_name="x")), 400, "validation_error")
    assert "unknown field 'voice_name'" in unknown
    half = _official()
    del half["gpt_cond_latent"]
    assert "gpt_cond_latent is required with speaker_embedding" in _error(
        client.post(endpoint, json=half), 400, "validation_error"
    )
    both = _official(speaker_latents={"gpt_cond_latent": GPT, "speaker_embedding": EMBEDDING})
    assert "not both" in _error(client.post(endpoint, json=both), 400, "validation_error")
    with_id = _official(speaker_id=DEV_SPEAKER)
    assert "exactly one of speaker_id" in _error(client.post(endpoint, json=with_id), 400, "validation_error")
    for chunk in ("abc", "0", "401", "020", " 20"):
        message = _error(client.post(endpoint, json=_official(stream_chunk_size=chunk)), 400, "validation_error")
        assert message.startswith("stream_chunk_size:"), message
    for field, value in (("add_wav_header", "false"), ("reused", "yes"), ("gpt_cond_latent", 5)):
        message = _error(client.post(endpoint, json=_official(**{field: value})), 400, "validation_error")
        assert message.startswith(f"{field}:"), message


def test_the_openapi_document_describes_both_shapes_and_answers(client) -> None:
    spec = client.get("/openapi/openapi.json").get_json()
    request = spec["components"]["schemas"]["TtsRequest"]
    for field in ("gpt_cond_latent", "speaker_embedding", "add_wav_header", "content_hash", "reused"):
        assert field in request["properties"], field
    assert {"type": "string", "pattern": r"^(?:[1-9][0-9]?|[1-3][0-9]{2}|400)$"} in request["properties"][
        "stream_chunk_size"
    ]["anyOf"]
    assert ["gpt_cond_latent", "speaker_embedding"] in [choice["required"] for choice in request["oneOf"]]
    tts = spec["paths"]["/tts"]["post"]["responses"]["200"]
    assert {"audio/wav", "audio/pcm", "application/json"} <= set(tts["content"])
    assert "base64" in tts["description"]
    assert {"audio/wav", "audio/pcm"} <= set(spec["paths"]["/tts_stream"]["post"]["responses"]["200"]["content"])
    assert "StudioSpeakers" in json.dumps(spec["paths"]["/studio_speakers"]["get"]["responses"]["200"])


def test_studio_speakers_wait_for_a_worker_to_publish_them(client) -> None:
    r = get_redis()
    assert _error(client.get("/studio_speakers"), 503, "no_workers")
    digest = "test-" + "0" * 59
    registry.publish(r, "compat-test-worker", {"name": "compat-test-worker", "studio_speakers": digest}, ttl=30)
    try:
        assert "not published" in _error(client.get("/studio_speakers"), 503, "studio_speakers_not_ready")
        document = json.dumps({"A": {"speaker_embedding": EMBEDDING, "gpt_cond_latent": GPT}}).encode()
        studio_speakers.publish(r, digest, document)
        response = client.get("/studio_speakers")
        assert response.status_code == 200 and response.mimetype == "application/json"
        assert response.data == document
    finally:
        registry.remove(r, "compat-test-worker")
        r.delete(studio_speakers.key(digest))


# --- the official clients' flows, against the running farm ------------------------------------------------------


def _clone_as_the_official_client_does(farm: Farm, make_audio) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    files = {"wav_file": ("reference.wav", make_audio(seconds=3.0, freq=180))}
    response = requests.post(farm.url("/clone_speaker"), files=files, timeout=180)
    assert response.status_code == 200, response.text
    speaker: dict[str, Any] = response.json()
    assert len(speaker["gpt_cond_latent"]) == 32 and len(speaker["speaker_embedding"]) == 512
    return speaker


def _stream(farm: Farm, speaker: dict[str, Any], add_wav_header: bool | None) -> tuple[bytes, dict[str, Any]]:
    """test_streaming.py's `tts()`: the clone response, text, language and stream_chunk_size "20" (and the header
    switch the official server takes), streamed."""
    body = {**speaker, "text": TEXT, "language": "en", "stream_chunk_size": "20"}
    if add_wav_header is not None:
        body["add_wav_header"] = add_wav_header
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=180) as response:
        assert response.status_code == 200, response.text
        audio = b"".join(response.iter_content(chunk_size=512))
        job_id = response.headers["X-Session-Id"]
        content_type = response.headers["Content-Type"]
    job = farm.wait_for_state(job_id, ("succeeded",))
    assert job["speaker"]["kind"] == "inline"
    return audio, {"content_type": content_type, "samples": job["progress"]["audio_samples"]}


def test_official_stream_client_with_a_cloned_voice_gets_raw_pcm_or_a_wav(farm: Farm, make_audio) -> None:  # type: ignore[no-untyped-def]
    speaker = _clone_as_the_official_client_does(farm, make_audio)
    assert set(speaker) - {"gpt_cond_latent", "speaker_embedding"}, "the farm's clone answer holds more to echo back"

    pcm, raw = _stream(farm, speaker, add_wav_header=False)
    assert raw["content_type"].startswith("audio/pcm")  # the farm's response_format pcm
    assert raw["samples"] > 0 and len(pcm) == raw["samples"] * 2
    assert not pcm.startswith(b"RIFF")

    wav, framed = _stream(farm, speaker, add_wav_header=True)
    assert framed["content_type"].startswith("audio/wav")
    fmt, samples = parse_stream_wav(wav)
    assert fmt["rate"] == 24000 and fmt["channels"] == 1 and fmt["bits"] == 16
    assert len(samples) == framed["samples"] * 2

    default, _ = _stream(farm, speaker, add_wav_header=None)  # the official default: a header
    assert default.startswith(b"RIFF")


def _studio_speakers(farm: Farm) -> dict[str, Any]:
    """GET /studio_speakers, once the workers have published them (they do so as they start)."""

    def published() -> dict[str, Any]:
        response = requests.get(farm.url("/studio_speakers"), timeout=30)
        return response.json() if response.status_code == 200 else {}

    return wait_for(published, 60, "the workers to publish the studio speakers", interval=0.5)


def test_studio_speakers_are_the_checkpoints_own_latents(farm: Farm, dev_model_dir: Path) -> None:
    studio = _studio_speakers(farm)
    names = requests.get(farm.url("/available_speakers"), timeout=10).json()["speakers"]
    assert sorted(studio) == sorted(names)
    checkpoint = torch.load(dev_model_dir / "dev" / "speakers_xtts.pth", weights_only=True)
    for name, latents in studio.items():
        assert set(latents) == {"speaker_embedding", "gpt_cond_latent"}
        gpt = torch.tensor(latents["gpt_cond_latent"], dtype=torch.float32)
        embedding = torch.tensor(latents["speaker_embedding"], dtype=torch.float32)
        assert gpt.shape == (32, WIDTH) and embedding.shape == (512,)
        # The very float32 values of the model's speaker: sent back, they are that speaker's voice.
        assert torch.equal(gpt, checkpoint[name]["gpt_cond_latent"].reshape(32, WIDTH))
        assert torch.equal(embedding, checkpoint[name]["speaker_embedding"].reshape(512))


def test_gradio_demo_tts_with_a_studio_speaker_gets_a_base64_wav_in_json(farm: Farm, speaker: str) -> None:
    # demo.py's start: its language menu is GET /languages as a list of codes.
    languages = requests.get(farm.url("/languages"), timeout=10).json()
    assert isinstance(languages, list) and "en" in languages and all(isinstance(code, str) for code in languages)
    embeddings = _studio_speakers(farm)[speaker]
    # demo.py's `tts()`, as written.
    response = requests.post(
        farm.url("/tts"),
        json={
            "text": TEXT,
            "language": "en",
            "speaker_embedding": embeddings["speaker_embedding"],
            "gpt_cond_latent": embeddings["gpt_cond_latent"],
        },
        timeout=180,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    encoded = response.json()
    assert isinstance(encoded, str)
    assert base64.b64decode(response.content) == base64.b64decode(encoded)  # demo.py decodes the body, quotes and all
    job = farm.wait_for_state(response.headers["X-Session-Id"], ("succeeded",))
    rate, frames, _pcm = read_wav(base64.b64decode(encoded))  # 16-bit mono
    assert rate == 24000 and frames == job["progress"]["audio_samples"] > 0
    # The farm's own shape keeps answering with the WAV itself.
    own = requests.post(farm.url("/tts"), json={"text": "Hi.", "language": "en", "speaker_id": speaker}, timeout=180)
    assert own.status_code == 200 and own.content.startswith(b"RIFF")
    assert own.headers["Content-Type"].startswith("audio/wav")


def test_an_unknown_field_in_the_official_shape_is_still_refused_by_name(farm: Farm) -> None:
    response = requests.post(farm.url("/tts_stream"), json=_official(speaker_wav="ref.wav"), timeout=30)
    assert "unknown field 'speaker_wav'" in _error(response, 400, "validation_error")
