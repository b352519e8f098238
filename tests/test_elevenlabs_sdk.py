"""ElevenLabs' official Python SDK (`elevenlabs`) against the farm, changing only its base URL: audio, audio with
character timestamps (whole and streamed), the voice list, and the SDK's errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError
from sqlalchemy import create_engine, text

from tools.localfarm import DEV_SPEAKER, Farm
from tools.tls import TlsTerminator, self_signed_certificate

TEXT = "The official client speaks to the farm. It changed only its address."
# The farm's extension, through the SDK's additional body parameters: every request exactly 30 audio tokens (the
# dev checkpoint's random weights can sample the stop token early: a full run got 13 tokens in one request of three).
SHORT = {"min_new_tokens": 30, "max_new_tokens": 30}


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


def test_the_sdks_realtime_stream_speaks_a_text_written_as_it_comes(
    farm: Farm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK opens its socket with wss:// (TLS) whatever its base URL: TLS in front of the farm, the SDK told to
    # trust its certificate.
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    terminator = TlsTerminator(farm.port, cert, key).start()
    try:
        client = ElevenLabs(api_key="no-key-needed", base_url=f"https://127.0.0.1:{terminator.port}", timeout=300)

        def written() -> Iterator[str]:
            yield from (word + " " for word in TEXT.split())

        audio = b"".join(client.text_to_speech.convert_realtime(DEV_SPEAKER, text=written(), output_format="pcm_24000"))
    finally:
        terminator.stop()
    # The context's session said the whole text, and the SDK got all of its audio.
    text, state, samples = _last_agent_job(farm)
    assert text.split() == TEXT.split() and state == "succeeded"
    assert len(audio) // 2 == samples > 0


def _last_agent_job(farm: Farm) -> tuple[str, str, int]:
    engine = create_engine(farm.database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT text, state, audio_samples FROM jobs WHERE origin = 'agent' ORDER BY created_at DESC")
            ).first()
    finally:
        engine.dispose()
    assert row is not None
    return str(row.text), str(row.state), int(row.audio_samples)
