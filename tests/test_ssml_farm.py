"""SSML on a real farm: a break is that much digital silence at its place in the audio; <voice>, <lang> and <prosody>
spans are segments of their own that the workers say in that voice, language and speed; a tag the farm does not speak
is told in the X-TTS-Warnings header. What a document is said as, unit by unit: tests/test_ssml.py."""

from __future__ import annotations

import json

import numpy as np
import requests

from shared.audio import SAMPLE_RATE
from tests.audio import read_wav, xtts_samples
from tools.localfarm import Farm, tts_body

TOKENS = 12


def pcm_samples(farm: Farm, body: dict) -> tuple[np.ndarray, requests.Response]:
    made = requests.post(farm.url("/tts"), json=body, timeout=120)
    assert made.status_code == 200, made.text
    return np.frombuffer(read_wav(made.content)[2], dtype="<i2"), made


def test_a_break_of_700_ms_is_700_ms_of_digital_silence_at_its_place(farm: Farm) -> None:
    document = '<speak>Before the break.<break time="700ms"/>After it.</speak>'
    audio, made = pcm_samples(farm, tts_body(document, TOKENS))
    speech, pause = xtts_samples(TOKENS), round(0.7 * SAMPLE_RATE)
    assert len(audio) == 2 * speech + pause
    assert not audio[speech : speech + pause].any(), "the pause is not silent"
    # The speech on either side is not: the silence is where the break was, exactly (to the sample).
    assert audio[speech - 240 : speech].any() and audio[speech + pause : speech + pause + 240].any()
    job = farm.job(made.headers["X-Session-Id"])
    assert [s["pause_ms"] for s in job["segments"]] == [0, 700, 0]
    assert job["progress"]["audio_samples"] == len(audio)


def test_a_pause_tag_in_plain_text_is_silence_too(farm: Farm) -> None:
    audio, _ = pcm_samples(farm, tts_body("Wait for it. [pause:0.25s] Now.", TOKENS))
    speech, pause = xtts_samples(TOKENS), round(0.25 * SAMPLE_RATE)
    assert len(audio) == 2 * speech + pause and not audio[speech : speech + pause].any()


def test_voice_lang_and_prosody_spans_go_to_segments_said_that_way(farm: Farm) -> None:
    document = (
        '<speak>Narrator speaks. <voice name="Daisy Studious">A character answers.</voice> '
        '<lang xml:lang="de-DE">Guten Tag.</lang> <voice name="alloy"><prosody rate="x-slow">Slowly.</prosody></voice>'
        "<vendor-effect>Back to the narrator.</vendor-effect></speak>"
    )
    body = tts_body(document, TOKENS, priority="bulk")
    created = requests.post(farm.url("/jobs"), json=body, timeout=30)
    assert created.status_code == 202, created.text
    job = farm.wait_for_state(created.json()["id"], ("succeeded", "failed"), 120)
    assert job["state"] == "succeeded", job
    said = [(s["language"], s["voice"], s["speed"]) for s in job["segments"]]
    assert said == [
        ("en", None, None),
        ("en", "Daisy Studious", None),
        ("de", None, None),
        ("en", "Claribel Dervla", 0.5),  # alloy is Claribel Dervla (shared/voice_aliases.py), at half speed
        ("en", None, None),
    ]
    # Each segment has the audio asked for (the voice and language change no length); the one at half speed, twice
    # as much: the worker was given the speed.
    seconds = [s["audio_seconds"] for s in job["segments"]]
    normal = round(xtts_samples(TOKENS) / SAMPLE_RATE, 3)
    assert seconds[:3] + seconds[4:] == [normal] * 4 and 1.9 < seconds[3] / normal < 2.1, seconds
    warnings = json.loads(created.headers["X-TTS-Warnings"])
    assert warnings == ["<vendor-effect> is not SSML the farm speaks: the tag was left out, its text said"]


def test_ssml_through_the_openai_speech_endpoint(farm: Farm) -> None:
    """OpenAI's input is SSML when it starts with <speak>: the break is silence there too."""
    body = {
        "model": "tts-1",
        "voice": "alloy",
        "input": '<speak>One.<break time="500ms"/>Two.</speak>',
        "response_format": "pcm",
        "min_new_tokens": TOKENS,
        "max_new_tokens": TOKENS,
    }
    made = requests.post(farm.url("/v1/audio/speech"), json=body, timeout=120)
    assert made.status_code == 200, made.text
    audio = np.frombuffer(made.content, dtype="<i2")
    speech, pause = xtts_samples(TOKENS), round(0.5 * SAMPLE_RATE)
    assert len(audio) == 2 * speech + pause and not audio[speech : speech + pause].any()


def test_a_voice_or_language_the_farm_does_not_have_is_refused_before_anything_is_queued(farm: Farm) -> None:
    for document, code in (
        ('<speak><voice name="Nobody Here">Hi.</voice></speak>', "unknown_speaker"),
        ('<speak><lang xml:lang="xx">Hi.</lang></speak>', "unknown_language"),
        ("<speak>\n<break time='soon'/></speak>", "invalid_ssml"),
    ):
        refused = requests.post(farm.url("/tts"), json=tts_body(document, TOKENS), timeout=30)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == code, refused.text
