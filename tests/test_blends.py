"""Voice blends (shared/blends.py, workers/voices.py): voices mixed by weight, their latents the weighted sum;
written `a:0.7+b:0.3` (or `{"blend": [...]}` in OpenAI's voice), used on the fly or saved with their recipe."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import torch

from shared import blends
from shared.blends import BlendPart, InvalidBlend
from shared.voice_kind import VoiceKind
from tests.audio import read_wav, xtts_samples
from tools.localfarm import Farm
from workers.engine import VoiceLatents
from workers.errors import SynthesisError
from workers.voices import blend, blended_voice

TOKENS = 12
WIDTH = 64  # the dev checkpoint's GPT latents


# --- the recipe -----------------------------------------------------------------------------------------------------
def test_a_blend_is_written_voice_colon_weight_and_its_weights_sum_to_one() -> None:
    assert blends.parse_blend("Claribel Dervla:0.7+Andrew Chipper:0.3") == [
        BlendPart("Claribel Dervla", 0.7),
        BlendPart("Andrew Chipper", 0.3),
    ]
    assert blends.parse_blend("a:2+b:1+a:1") == [BlendPart("a", 0.75), BlendPart("b", 0.25)]  # a named twice
    assert blends.parse_blend("a+b") == [BlendPart("a", 0.5), BlendPart("b", 0.5)]  # no weight: 1
    assert blends.written(blends.parse_blend(" a : 3 + b : 1 ")) == "a:0.75+b:0.25"


def test_which_names_are_blends() -> None:
    assert blends.is_blend("a+b") and blends.is_blend("alloy:0.5")
    assert not blends.is_blend("Claribel Dervla") and not blends.is_blend("narrator-2")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a:1", "2 to 4"),
        ("a:1+a:2", "2 to 4"),
        ("a+b+c+d+e", "2 to 4"),
        ("a:0+b:1", "above 0"),
        ("a:101+b:1", "at most 100"),
        ("a:x+b", "voice:weight"),
        ("+b", "voice:weight"),
        ("a:-1+b", "voice:weight"),
    ],
)
def test_bad_blends_are_refused_saying_how_to_write_one(text: str, says: str) -> None:
    with pytest.raises(InvalidBlend, match=says):
        blends.parse_blend(text)


def test_a_recipe_names_each_voice_by_kind_and_reads_back() -> None:
    parts = [BlendPart("Claribel Dervla", 0.7, VoiceKind.BUILTIN), BlendPart("alice/narrator", 0.3, VoiceKind.SAVED)]
    ref = blends.blend_ref(parts)
    assert blends.read_ref(ref) == parts and len(ref) <= blends.MAX_REF_CHARS
    with pytest.raises(InvalidBlend, match="too long"):
        blends.blend_ref([BlendPart("x" * 150, 0.5, VoiceKind.SAVED), BlendPart("y" * 150, 0.5, VoiceKind.SAVED)])


# --- the mix --------------------------------------------------------------------------------------------------------
def _voice(seed: int, rows: int = 32) -> VoiceLatents:
    generator = torch.Generator().manual_seed(seed)
    return VoiceLatents(torch.randn(1, rows, WIDTH, generator=generator), torch.randn(1, 512, 1, generator=generator))


def test_a_blends_latents_are_the_weighted_sum_of_its_voices() -> None:
    a, b, c = _voice(1), _voice(2), _voice(3)
    mixed = blend([a, b, c], [0.5, 0.3, 0.2])
    expected_gpt = 0.5 * a.gpt_cond_latent + 0.3 * b.gpt_cond_latent + 0.2 * c.gpt_cond_latent
    expected_speaker = 0.5 * a.speaker_embedding + 0.3 * b.speaker_embedding + 0.2 * c.speaker_embedding
    assert torch.allclose(mixed.gpt_cond_latent, expected_gpt, atol=1e-6)
    assert torch.allclose(mixed.speaker_embedding, expected_speaker, atol=1e-6)
    assert not torch.allclose(mixed.gpt_cond_latent, a.gpt_cond_latent)


def test_voices_of_different_shapes_are_not_blended() -> None:
    with pytest.raises(SynthesisError, match="different shapes"):
        blend([_voice(1, rows=32), _voice(2, rows=65)], [0.5, 0.5])


def test_a_blend_of_built_in_speakers_mixes_the_models_own_latents(engine) -> None:
    first, second = engine.builtin_voice("Claribel Dervla"), engine.builtin_voice("Andrew Chipper")
    ref = blends.blend_ref(
        [BlendPart("Claribel Dervla", 0.25, VoiceKind.BUILTIN), BlendPart("Andrew Chipper", 0.75, VoiceKind.BUILTIN)]
    )
    mixed = blended_voice(engine, None, ref)  # type: ignore[arg-type]  # built-in speakers need no cache
    assert torch.allclose(mixed.gpt_cond_latent, 0.25 * first.gpt_cond_latent + 0.75 * second.gpt_cond_latent)
    assert torch.allclose(mixed.speaker_embedding, 0.25 * first.speaker_embedding + 0.75 * second.speaker_embedding)


# --- on a farm ------------------------------------------------------------------------------------------------------
def _greedy(farm: Farm, speaker: str) -> np.ndarray:
    body = {"text": "Blended words.", "language": "en", "speaker_id": speaker, "top_k": 1}
    body |= {"min_new_tokens": TOKENS, "max_new_tokens": TOKENS}
    made = requests.post(farm.url("/tts"), json=body, timeout=120)
    assert made.status_code == 200, made.text
    job = farm.job(made.headers["X-Session-Id"])
    audio = np.frombuffer(read_wav(made.content)[2], dtype="<i2")
    assert len(audio) == xtts_samples(TOKENS)
    return audio, job


def test_a_blend_speaks_on_the_fly_unlike_either_of_its_voices(farm: Farm) -> None:
    mixed, job = _greedy(farm, "Claribel Dervla:0.5+ash:0.5")  # ash is Andrew Chipper (an alias)
    assert job["speaker"] == {"kind": "blend", "id": "Claribel Dervla:0.5+Andrew Chipper:0.5"}
    alone, _ = _greedy(farm, "Claribel Dervla")
    again, _ = _greedy(farm, "Claribel Dervla")
    assert np.array_equal(alone, again) and not np.array_equal(mixed, alone)  # greedy: only the voice differs


def test_openai_voice_takes_a_blend_as_an_object(farm: Farm) -> None:
    body = {
        "model": "tts-1",
        "input": "Mixed.",
        "voice": {"blend": [{"voice": "alloy", "weight": 2}, {"voice": "ash", "weight": 1}]},
        "response_format": "pcm",
        "min_new_tokens": TOKENS,
        "max_new_tokens": TOKENS,
    }
    made = requests.post(farm.url("/v1/audio/speech"), json=body, timeout=120)
    assert made.status_code == 200, made.text
    assert len(made.content) // 2 == xtts_samples(TOKENS)


LATENTS = {
    "first": ([[0.02] * WIDTH] * 32, [0.03] * 512),
    "second": ([[-0.04] * WIDTH] * 32, [0.09] * 512),
}


def test_a_saved_blend_keeps_its_recipe_and_its_latents_are_the_weighted_sum(farm: Farm) -> None:
    for voice, (gpt, speaker) in LATENTS.items():
        body = {"gpt_cond_latent": gpt, "speaker_embedding": speaker, "overwrite": True}
        assert requests.post(farm.url(f"/save_voice/blend-{voice}"), json=body, timeout=30).status_code == 201
    saved = requests.post(
        farm.url("/save_blend/mixed"),
        json={"blend": "blend-first:3+blend-second:1", "name": "Mixed", "overwrite": True},
        timeout=60,
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["source"] == "blend" and saved.json()["recipe"] == "blend-first:0.75+blend-second:0.25"
    latents = requests.get(farm.url("/saved_voices/mixed"), params={"include_latents": "true"}, timeout=30).json()
    first, second = (np.array(LATENTS[v][0]) for v in ("first", "second"))
    assert np.allclose(latents["gpt_cond_latent"], 0.75 * first + 0.25 * second, atol=1e-6)
    embeddings = (np.array(LATENTS[v][1]) for v in ("first", "second"))
    assert np.allclose(latents["speaker_embedding"], 0.75 * next(embeddings) + 0.25 * next(embeddings), atol=1e-6)
    _greedy(farm, "mixed")  # and it speaks, as a saved voice


@pytest.mark.parametrize(
    ("speaker", "code"),
    [("Claribel Dervla:1", "invalid_blend"), ("Claribel Dervla:0.5+Nobody:0.5", "unknown_speaker")],
)
def test_bad_blends_in_a_request_are_refused(farm: Farm, speaker: str, code: str) -> None:
    body = {"text": "x", "language": "en", "speaker_id": speaker}
    refused = requests.post(farm.url("/tts"), json=body, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == code, refused.text
    saved = requests.post(farm.url("/save_blend/x"), json={"blend": speaker}, timeout=30)
    assert saved.status_code == 400 and saved.json()["error"]["code"] == code, saved.text
