"""Several voices in one text: a request's `segments`, each piece in its own voice and language, said one after
another in one audio stream (SSML's <voice> and <lang> do the same: tests/test_ssml_farm.py)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from shared.audio import SAMPLE_RATE
from tests.audio import read_wav, xtts_samples
from tools.localfarm import DEV_SPEAKER, Farm

TOKENS = 12
DIALOGUE = [
    {"text": "Where were you last night?", "voice": "Daisy Studious"},
    {"text": "Out. [pause:400ms] Walking.", "voice": "Andrew Chipper"},
    {"text": "Nur spazieren?", "voice": "Daisy Studious", "language": "de"},
    {"text": "The narrator says nothing more."},
]


def test_the_normalize_endpoint_shows_each_piece_in_its_voice_and_language(client) -> None:
    answer = client.post("/v1/text/normalize", json={"segments": DIALOGUE, "language": "en", "voice": "alloy"})
    assert answer.status_code == 200, answer.json
    assert [(s["text"], s["voice"], s["language"], s["pause_ms"]) for s in answer.json["segments"]] == [
        ("Where were you last night?", "Daisy Studious", "en", 0),
        ("Out.", "Andrew Chipper", "en", 0),
        ("", "alloy", "en", 400),
        ("Walking.", "Andrew Chipper", "en", 0),
        ("Nur spazieren?", "Daisy Studious", "de", 0),
        ("The narrator says nothing more.", "alloy", "en", 0),
    ]


def test_pieces_said_alike_stay_sentences_of_their_own(client) -> None:
    pieces = [{"text": "One"}, {"text": "two"}]
    answer = client.post("/v1/text/normalize", json={"segments": pieces, "language": "en"})
    assert [s["text"] for s in answer.json["segments"]] == ["One two"]  # not "Onetwo"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"segments": DIALOGUE, "text": "both", "language": "en", "speaker_id": DEV_SPEAKER}, "validation_error"),
        ({"language": "en", "speaker_id": DEV_SPEAKER}, "validation_error"),  # neither
        ({"segments": [], "language": "en", "speaker_id": DEV_SPEAKER}, "validation_error"),
        ({"segments": [{"text": "  "}], "language": "en", "speaker_id": DEV_SPEAKER}, "validation_error"),
        ({"segments": [{"text": "x", "pitch": 2}], "language": "en", "speaker_id": DEV_SPEAKER}, "validation_error"),
        ({"segments": [{"text": "Hi", "language": "xx"}], "language": "en", "speaker_id": DEV_SPEAKER}, None),
        ({"segments": [{"text": "a"}] * 1001, "language": "en", "speaker_id": DEV_SPEAKER}, "validation_error"),
        ({"segments": [{"text": "a [pause:20s]"}], "language": "en", "speaker_id": DEV_SPEAKER}, "invalid_ssml"),
    ],
)
def test_bad_segments_are_refused_with_the_error_contract(client, body: dict, code: str | None) -> None:
    answer = client.post("/tts", json=body)
    assert answer.status_code == 400, answer.json
    # A language no worker speaks is told once workers are up (no worker runs here: no_workers or unknown_language).
    assert (
        answer.json["error"]["code"] == code
        if code
        else answer.json["error"]["code"]
        in (
            "unknown_language",
            "no_workers",
        )
    )


def test_a_dialogue_is_one_stream_in_order_with_each_voice_and_language(farm: Farm) -> None:
    body = {
        "segments": DIALOGUE,
        "language": "en",
        "speaker_id": DEV_SPEAKER,
        "min_new_tokens": TOKENS,
        "max_new_tokens": TOKENS,
    }
    made = requests.post(farm.url("/tts"), json=body, timeout=120)
    assert made.status_code == 200, made.text
    audio = np.frombuffer(read_wav(made.content)[2], dtype="<i2")
    speech, pause = xtts_samples(TOKENS), round(0.4 * SAMPLE_RATE)
    assert len(audio) == 5 * speech + pause
    assert not audio[2 * speech : 2 * speech + pause].any(), "the pause is not where the piece put it"
    job = farm.job(made.headers["X-Session-Id"])
    assert [(s["voice"], s["language"], s["pause_ms"]) for s in job["segments"]] == [
        ("Daisy Studious", "en", 0),
        ("Andrew Chipper", "en", 0),
        (None, "en", 400),
        ("Andrew Chipper", "en", 0),
        ("Daisy Studious", "de", 0),
        (None, "en", 0),  # the request's speaker
    ]
    # The worker said each piece in its voice: with sampling made greedy (top_k 1), the same words in one voice
    # twice are the same audio, and in two voices they are not.
    same = _said_twice(farm, "Daisy Studious", "Daisy Studious")
    other = _said_twice(farm, "Daisy Studious", "Andrew Chipper")
    assert np.array_equal(*same) and not np.array_equal(*other)


def _said_twice(farm: Farm, first: str, second: str) -> tuple[np.ndarray, np.ndarray]:
    """Words said by `first`, then by `second`, in one greedy request: the audio of each. (A pause between them:
    pieces said alike are joined into one segment.)"""
    pieces = [{"text": f"Same words. {tag}", "voice": voice} for voice, tag in ((first, "[pause:0.1s]"), (second, ""))]
    body = {"segments": pieces, "language": "en", "speaker_id": DEV_SPEAKER, "top_k": 1}
    body |= {"min_new_tokens": TOKENS, "max_new_tokens": TOKENS}
    made = requests.post(farm.url("/tts"), json=body, timeout=120)
    assert made.status_code == 200, made.text
    audio = np.frombuffer(read_wav(made.content)[2], dtype="<i2")
    speech, pause = xtts_samples(TOKENS), round(0.1 * SAMPLE_RATE)
    assert len(audio) == 2 * speech + pause
    return audio[:speech], audio[speech + pause :]
