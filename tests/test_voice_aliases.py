"""OpenAI's voice names, each an alias of a built-in speaker (shared/voice_aliases.py): the official model's speaker
of a like voice, else the model's speakers in turn; never in place of a real voice of that name."""

from __future__ import annotations

from shared.voice_aliases import OPENAI_VOICES, aliases_of, speaker_for_alias
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
