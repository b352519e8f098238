"""ElevenLabs' official Python SDK (`elevenlabs`) against the farm, changing only its base URL: audio, audio with
character timestamps (whole and streamed), the voice list, and the SDK's errors."""

from __future__ import annotations

import base64

import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from tools.localfarm import DEV_SPEAKER, Farm

TEXT = "The official client speaks to the farm. It changed only its address."
SHORT = {"max_new_tokens": 30}  # the farm's extension, through the SDK's additional body parameters


def _client(farm: Farm) -> ElevenLabs:
    return ElevenLabs(api_key="no-key-needed", base_url=farm.base_url, timeout=300)


def _samples(farm: Farm, farm_job: str) -> int:
    return int(farm.wait_for_state(farm_job, ("succeeded",))["progress"]["audio_samples"])


def test_the_sdk_gets_audio_and_timestamps_whole_and_streamed(farm: Farm) -> None:
    client = _client(farm)
    options = {"additional_body_parameters": SHORT}
    with client.text_to_speech.with_raw_response.convert(
        DEV_SPEAKER, text=TEXT, output_format="pcm_16000", request_options=options
    ) as raw:
        audio = b"".join(raw.data)
        job = raw.headers["x-session-id"]
    assert len(audio) // 2 == round(_samples(farm, job) * 16000 / 24000)

    timed = client.text_to_speech.convert_with_timestamps(
        DEV_SPEAKER, text=TEXT, output_format="pcm_24000", request_options=options
    )
    pcm = base64.b64decode(timed.audio_base_64)
    assert timed.alignment is not None and "".join(timed.alignment.characters) == TEXT
    ends = timed.alignment.character_end_times_seconds
    assert abs(ends[-1] - len(pcm) / 2 / 24000) < 0.002

    pieces = list(
        client.text_to_speech.stream_with_timestamps(
            DEV_SPEAKER, text=TEXT, output_format="pcm_24000", request_options=options
        )
    )
    assert len(pieces) > 1
    chars = "".join(c for piece in pieces if piece.alignment for c in piece.alignment.characters)
    assert chars == TEXT
    assert sum(len(base64.b64decode(p.audio_base_64 or "")) for p in pieces) == len(pcm)


def test_the_sdk_lists_the_voices_and_raises_the_farms_errors(farm: Farm) -> None:
    client = _client(farm)
    voices = client.voices.get_all().voices
    assert DEV_SPEAKER in {v.voice_id for v in voices}
    assert client.voices.get(DEV_SPEAKER).name == DEV_SPEAKER
    with pytest.raises(ApiError) as refused:
        client.text_to_speech.convert_with_timestamps("Nobody At All", text="Hello.")
    assert refused.value.status_code == 400
    assert refused.value.body["detail"]["status"] == "unknown_speaker"
