"""OpenAI's voice names, each an alias of a built-in speaker (shared/voice_aliases.py): the official model's speaker
of a like voice, else the model's speakers in turn; never in place of a real voice of that name. A tenant's own
aliases (/voice_aliases) name its voices and replace OpenAI's defaults for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from shared.voice_aliases import OPENAI_VOICES, aliases_of, speaker_for_alias
from tools.localfarm import DEV_SPEAKER, Farm
from workers.devmodel import DEV_SPEAKERS

# OpenAI's voices (its API reference), and the XTTS-v2 speakers they stand for: women's voices for coral, nova,
# sage, shimmer and marin, men's for ash, ballad, echo, fable, onyx, verse and cedar, alloy's (neutral) a woman's.
OPENAI_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


def test_every_openai_voice_name_stands_for_its_own_official_speaker() -> None:
    official = [*OPENAI_VOICES.values(), "Tammy Grit", "Ludvig Milivoj"]  # and others of the model's
    assert set(OPENAI_VOICES) == set(OPENAI_NAMES)
    assert {name: speaker_for_alias(name, official) for name in OPENAI_NAMES} == OPENAI_VOICES
    assert len(set(OPENAI_VOICES.values())) == len(OPENAI_NAMES)  # thirteen different voices


def test_with_the_dev_checkpoints_four_speakers_each_name_keeps_one_speaker() -> None:
    speakers = list(DEV_SPEAKERS)
    mapped = aliases_of(speakers)
    assert set(mapped) == set(OPENAI_NAMES) and set(mapped.values()) <= set(speakers)
    assert mapped["alloy"] == "Claribel Dervla" and mapped["ash"] == "Andrew Chipper"
    assert mapped["coral"] == "Daisy Studious" and mapped["nova"] == "Gracie Wise"
    assert mapped == aliases_of(list(reversed(speakers)))  # the same whatever order the model lists them in
    assert mapped["echo"] == sorted(speakers)[OPENAI_NAMES.index("echo") % 4]


def test_a_name_that_is_no_alias_or_a_model_without_speakers_has_none() -> None:
    assert speaker_for_alias("Alloy", list(DEV_SPEAKERS)) is None  # names are exact, as voices are
    assert speaker_for_alias("Claribel Dervla", list(DEV_SPEAKERS)) is None
    assert speaker_for_alias("alloy", []) is None and aliases_of([]) == {}


# --- a tenant's own aliases -----------------------------------------------------------------------------------------
@pytest.fixture
def aliases(farm: Farm) -> Iterator[Farm]:
    """The farm; every alias a test makes is deleted afterwards (the farm is shared)."""
    yield farm
    for alias in requests.get(farm.url("/voice_aliases"), timeout=30).json()["aliases"]:
        requests.delete(farm.url(f"/voice_aliases/{alias['name']}"), timeout=30)


def _speaker(farm: Farm, voice: str) -> dict:
    body = {"text": "Hi.", "language": "en", "speaker_id": voice, "min_new_tokens": 8, "max_new_tokens": 8}
    made = requests.post(farm.url("/tts"), json=body, timeout=60)
    assert made.status_code == 200, made.text
    speaker: dict = farm.job(made.headers["X-Session-Id"])["speaker"]
    return speaker


def test_a_tenant_names_its_voices_and_remaps_openai_names(aliases: Farm) -> None:
    farm = aliases
    made = requests.put(farm.url("/voice_aliases/narrator"), json={"voice": "Daisy Studious"}, timeout=30)
    assert made.status_code == 201, made.text
    assert _speaker(farm, "narrator") == {"kind": "builtin", "id": "Daisy Studious"}
    # OpenAI's names are aliases by default; the tenant's own alias of one replaces it, and deleting it restores it.
    assert _speaker(farm, "alloy")["id"] == "Claribel Dervla"
    assert requests.put(farm.url("/voice_aliases/alloy"), json={"voice": "Andrew Chipper"}, timeout=30).ok
    assert _speaker(farm, "alloy")["id"] == "Andrew Chipper"
    listed = {card["id"]: card for card in requests.get(farm.url("/v1/audio/voices"), timeout=30).json()["data"]}
    assert listed["narrator"] == {"id": "narrator", "name": "narrator", "type": "alias", "voice": "Daisy Studious"}
    assert listed["alloy"]["voice"] == "Andrew Chipper"
    assert requests.delete(farm.url("/voice_aliases/alloy"), timeout=30).json() == {"deleted": "alloy"}
    assert _speaker(farm, "alloy")["id"] == "Claribel Dervla"
    # An alias may stand for a blend; never for another alias (no chains), and never hides a voice.
    assert (
        requests.put(farm.url("/voice_aliases/duet"), json={"voice": "narrator:1+ash:1"}, timeout=30).status_code == 400
    )
    assert requests.put(farm.url("/voice_aliases/duet"), json={"voice": "alloy:1+ash:1"}, timeout=30).status_code == 201
    assert _speaker(farm, "duet") == {"kind": "blend", "id": "Claribel Dervla:0.5+Andrew Chipper:0.5"}
    assert requests.put(farm.url(f"/voice_aliases/{DEV_SPEAKER}"), json={"voice": "ash"}, timeout=30).ok
    assert _speaker(farm, DEV_SPEAKER)["id"] == DEV_SPEAKER


@pytest.mark.parametrize(
    ("name", "voice", "code"),
    [
        ("a+b", "ash", "invalid_input"),
        ("ok", "Nobody Here", "unknown_speaker"),
        ("ok", "narrator-that-is-no-voice", "unknown_speaker"),
        ("ok", "ash:1", "invalid_blend"),
    ],
)
def test_bad_aliases_are_refused(aliases: Farm, name: str, voice: str, code: str) -> None:
    refused = requests.put(aliases.url(f"/voice_aliases/{name}"), json={"voice": voice}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == code, refused.text
    assert requests.delete(aliases.url("/voice_aliases/never-made"), timeout=30).status_code == 404
