"""Voice names that apps written for other services send, each standing for a built-in speaker: OpenAI's.

OpenAI's speech API has a fixed set of voices, and some apps send nothing else (a voice-agent framework's OpenAI
service refuses any other name before it sends a request; Open WebUI's default is `alloy`). Each name is an alias of
an XTTS-v2 built-in speaker with a voice of the same kind (a woman's or a man's, as OpenAI describes its own). With a
model whose speakers differ (the dev checkpoint has four), a name whose speaker is missing takes the model's speakers
in turn, in alphabetical order, so that it always says the same speaker. A saved voice or a built-in speaker of the
same name comes first: an alias never hides a voice.
"""

from __future__ import annotations

from collections.abc import Sequence

# A tenant's own alias (shared/alias_store.py): no blend syntax in it (`+`, `:`, `|`, `=`), no `/`, no NUL.
ALIAS_NAME_PATTERN = r"^[^\x00+:|=/]{1,64}$"

OPENAI_VOICES: dict[str, str] = {
    "alloy": "Claribel Dervla",
    "ash": "Andrew Chipper",
    "ballad": "Craig Gutsy",
    "coral": "Daisy Studious",
    "echo": "Viktor Eka",
    "fable": "Royston Min",
    "nova": "Gracie Wise",
    "onyx": "Damien Black",
    "sage": "Ana Florence",
    "shimmer": "Sofia Hellen",
    "verse": "Badr Odhiambo",
    "marin": "Tammie Ema",
    "cedar": "Dionisio Schuyler",
}


def speaker_for_alias(name: str, speakers: Sequence[str]) -> str | None:
    """The built-in speaker among `speakers` that `name` stands for; None when it is no alias or there is none."""
    if name not in OPENAI_VOICES or not speakers:
        return None
    if OPENAI_VOICES[name] in speakers:
        return OPENAI_VOICES[name]
    return sorted(speakers)[list(OPENAI_VOICES).index(name) % len(speakers)]


def aliases_of(speakers: Sequence[str]) -> dict[str, str]:
    """Every alias and the speaker among `speakers` it stands for (none without speakers)."""
    return {name: speaker for name in OPENAI_VOICES if (speaker := speaker_for_alias(name, speakers)) is not None}
