"""The OpenAI-compatible speech API (/v1), with the official `openai` package as the client, pointed at the farm's
base URL: plain and streaming-helper calls in every response_format, Server-Sent Events, the model and voice lists,
errors as the client raises them, with and without API keys."""

from __future__ import annotations

import base64
import json
import uuid

import openai
import pytest
import requests

from api.encoding import FORMATS, MEDIA_TYPES
from shared.voice_aliases import aliases_of
from tests.audio import assert_duration_matches
from tools.localfarm import Farm, create_api_key

WIDTH = 64  # the dev checkpoint's GPT width
LATENTS = {"gpt_cond_latent": [[0.02] * WIDTH] * 32, "speaker_embedding": [0.03] * 512}
# The dev model's noise never stops by itself: extensions of the request pin its length (through extra_body).
SHORT = {"min_new_tokens": 30, "max_new_tokens": 30}


def _client(farm: Farm, key: str | None = None) -> openai.OpenAI:
    # The openai package refuses to start without a key; a farm without keys ignores it.
    return openai.OpenAI(base_url=farm.url("/v1"), api_key=key or "no-key-needed", max_retries=0, timeout=120)


def _samples(farm: Farm, job_id: str, key: str | None = None) -> int:
    """The exact audio of the job, once it has succeeded (asked with the tenant's own key: another
    tenant, even an admin, gets a 404)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    samples: int = farm.wait_for_state(job_id, ("succeeded",), headers=headers)["progress"]["audio_samples"]
    assert samples > 0
    return samples


@pytest.mark.parametrize("fmt", FORMATS)
def test_speech_in_every_format_plain_and_with_the_streaming_helper(farm: Farm, speaker: str, fmt: str) -> None:
    client = _client(farm)
    plain = client.audio.speech.create(
        model="tts-1", voice=speaker, input="Hello from the farm.", response_format=fmt, extra_body=SHORT
    )
    assert plain.response.headers["Content-Type"] == MEDIA_TYPES[fmt]
    assert_duration_matches(plain.content, fmt, _samples(farm, plain.response.headers["X-Session-Id"]))

    with client.audio.speech.with_streaming_response.create(
        model="xtts-v2", voice=speaker, input="Streamed to the client.", response_format=fmt, extra_body=SHORT
    ) as streamed:
        data = b"".join(streamed.iter_bytes())
        job_id = streamed.headers["X-Session-Id"]
    assert_duration_matches(data, fmt, _samples(farm, job_id))


def test_default_format_is_mp3_and_extras_are_accepted(farm: Farm, speaker: str) -> None:
    speech = _client(farm).audio.speech.create(
        model="gpt-4o-mini-tts",
        voice={"id": speaker},  # the openai package's custom-voice form
        input="Defaults as OpenAI's.",
        speed=1.5,
        instructions="Speak cheerfully.",  # accepted, ignored
        extra_body={**SHORT, "language": "en"},
    )
    assert speech.response.headers["Content-Type"] == "audio/mpeg"
    assert_duration_matches(speech.content, "mp3", _samples(farm, speech.response.headers["X-Session-Id"]))


def test_sse_stream_format_sends_audio_deltas_then_done(farm: Farm, speaker: str) -> None:
    with _client(farm).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice=speaker,
        input="Events, as OpenAI sends them.",
        response_format="opus",
        stream_format="sse",
        extra_body=SHORT,
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        job_id = response.headers["X-Session-Id"]
        events = [
            json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) > 2
    assert events[-1]["type"] == "speech.audio.done" and set(events[-1]["usage"]) >= {"input_tokens", "total_tokens"}
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert events[-1]["audio_bytes"] == len(audio)
    assert_duration_matches(audio, "opus", _samples(farm, job_id))


def test_errors_come_through_the_client_with_the_farms_message(farm: Farm, speaker: str) -> None:
    client = _client(farm)
    with pytest.raises(openai.BadRequestError) as unknown_voice:
        client.audio.speech.create(model="tts-1", voice="nobody-at-all", input="Hello.")
    error = unknown_voice.value
    assert error.code == "unknown_speaker" and error.param == "voice" and error.type == "invalid_request_error"
    assert "'nobody-at-all'" in str(error) and "'nobody-at-all'" in error.body["message"]  # type: ignore[index]
    assert error.body["status"] == 400  # type: ignore[index]  # the farm's own contract is still there

    with pytest.raises(openai.BadRequestError) as bad_model:
        client.audio.speech.create(model="whisper-1", voice=speaker, input="Hello.")
    assert bad_model.value.param == "model" and "'xtts-v2'" in bad_model.value.body["message"]  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as bad_format:
        client.audio.speech.create(model="tts-1", voice=speaker, input="Hello.", extra_body={"response_format": "wma"})
    assert bad_format.value.param == "response_format"

    with pytest.raises(openai.BadRequestError) as too_fast:
        client.audio.speech.create(model="tts-1", voice=speaker, input="Hello.", speed=4.5)
    assert too_fast.value.param == "speed"

    # A route the farm does not have: still the error shape OpenAI's clients parse.
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF"))
    assert missing.value.type == "not_found_error"


def test_models_are_listed_as_openai_lists_them(farm: Farm) -> None:
    models = {m.id: m for m in _client(farm).models.list()}
    assert {"xtts-v2", "xtts_v2", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(models)
    assert models["xtts-v2"].object == "model" and models["xtts-v2"].owned_by


def test_the_model_as_xtts_model_spells_it_is_accepted(farm: Farm, speaker: str) -> None:
    """XTTS_MODEL says xtts_v2, OpenAI-style ids say xtts-v2: both are the same model."""
    speech = _client(farm).audio.speech.create(
        model="xtts_v2", voice=speaker, input="Either spelling.", response_format="wav", extra_body=SHORT
    )
    assert_duration_matches(speech.content, "wav", _samples(farm, speech.response.headers["X-Session-Id"]))


def test_voices_lists_built_in_speakers_and_openais_names(farm: Farm, speaker: str) -> None:
    listed = requests.get(farm.url("/v1/audio/voices"), timeout=10).json()
    assert listed["object"] == "list"
    assert {"id": speaker, "name": speaker, "type": "builtin", "voice": None} in listed["data"]
    aliases = {card["id"]: card["voice"] for card in listed["data"] if card["type"] == "alias"}
    assert aliases == aliases_of(requests.get(farm.url("/available_speakers"), timeout=10).json()["speakers"])
    assert aliases["alloy"] == "Claribel Dervla" and len(aliases) == 13


def test_an_app_that_knows_only_openais_voices_works_with_no_setup(farm: Farm) -> None:
    """`alloy` (Open WebUI's default; some agent frameworks send nothing else) says a built-in speaker."""
    speech = _client(farm).audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="Hello from an app made for OpenAI.",
        response_format="wav",
        extra_body=SHORT,
    )
    job_id = speech.response.headers["X-Session-Id"]
    assert_duration_matches(speech.content, "wav", _samples(farm, job_id))
    assert farm.job(job_id)["speaker"] == {"kind": "builtin", "id": "Claribel Dervla"}
    with pytest.raises(openai.BadRequestError, match="OpenAI's voice names"):
        _client(farm).audio.speech.create(model="tts-1", voice="alloy2", input="No such voice.", extra_body=SHORT)


def test_with_keys_the_client_sends_its_key_and_sees_its_tenants_voices(keyed_farm: Farm) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    key = create_api_key(keyed_farm.database_url, f"app-{tenant}", tenant)
    other = create_api_key(keyed_farm.database_url, f"other-{tenant}", f"o{tenant}")
    voice = f"narrator-{tenant}"
    saved = requests.post(
        keyed_farm.url(f"/save_voice/{voice}"),
        json={**LATENTS, "name": "Narrator"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert saved.status_code == 201, saved.text

    with pytest.raises(openai.AuthenticationError) as no_key:
        _client(keyed_farm, "xtts_not-a-key").models.list()
    assert no_key.value.code == "invalid_api_key" and no_key.value.type == "authentication_error"
    assert "API key" in no_key.value.body["message"] or "key" in no_key.value.body["message"]  # type: ignore[index]

    mine = _client(keyed_farm, key)
    assert "xtts-v2" in {m.id for m in mine.models.list()}
    voices = requests.get(keyed_farm.url("/v1/audio/voices"), headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert {"id": voice, "name": "Narrator", "type": "saved", "voice": None} in voices.json()["data"]
    theirs = requests.get(keyed_farm.url("/v1/audio/voices"), headers={"Authorization": f"Bearer {other}"}, timeout=10)
    assert voice not in {v["id"] for v in theirs.json()["data"]}

    speech = mine.audio.speech.create(model="tts-1", voice=voice, input="In my own voice.", extra_body=SHORT)
    assert_duration_matches(speech.content, "mp3", _samples(keyed_farm, speech.response.headers["X-Session-Id"], key))
    with pytest.raises(openai.BadRequestError) as not_theirs:
        _client(keyed_farm, other).audio.speech.create(model="tts-1", voice=voice, input="Not mine.")
    assert not_theirs.value.code == "unknown_speaker"


def test_rules_across_fields_are_a_400_not_a_500(farm: Farm, speaker: str) -> None:
    with pytest.raises(openai.BadRequestError) as crossed:
        _client(farm).audio.speech.create(
            model="tts-1", voice=speaker, input="Hello.", extra_body={"min_new_tokens": 50, "max_new_tokens": 10}
        )
    assert "min_new_tokens must not exceed max_new_tokens" in crossed.value.body["message"]  # type: ignore[index]
