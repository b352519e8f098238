"""Voice blends: several voices mixed by weight into one (`"Claribel Dervla:0.7+Andrew Chipper:0.3"`).

A blend's conditioning is the weighted sum of its voices' GPT latents and of their speaker embeddings, with the
weights scaled to sum to 1 (workers/voices.py computes it). The API finds each voice (a saved voice of the tenant, a
built-in speaker or an alias) and hands the workers a recipe: each voice by kind and reference, with its weight,
in the job's voice reference (`blend_ref`), which fits the 200 characters SQL keeps for one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import InvalidInput
from shared.voice_kind import VoiceKind

MAX_BLEND_VOICES = 4
MAX_REF_CHARS = 200
_WEIGHT = re.compile(r"\d{1,3}(?:\.\d{1,6})?")


class InvalidBlend(InvalidInput):
    code = "invalid_blend"


@dataclass(frozen=True)
class BlendPart:
    voice: str  # as the request names it (parsing), or the voice's reference within its kind (a recipe)
    weight: float
    kind: VoiceKind | None = None


def is_blend(name: str) -> bool:
    """Whether a voice name is a blend: voice names have no `+`, nor `:` followed by a weight."""
    return "+" in name or bool(re.search(r":\s*" + _WEIGHT.pattern + r"\s*$", name))


def parse_blend(text: str) -> list[BlendPart]:
    """`a:0.7+b:0.3` (a voice without a weight weighs 1) as parts with weights summing to 1."""
    parts = []
    for piece in text.split("+"):
        name, _, weight = piece.rpartition(":") if ":" in piece else (piece, "", "1")
        name, weight = name.strip(), weight.strip()
        if not name or not _WEIGHT.fullmatch(weight):
            raise InvalidBlend(
                f"voice blend {text[:120]!r}: write it as voice:weight+voice:weight (e.g. anna:0.7+ben:0.3)"
            )
        parts.append(BlendPart(name, float(weight)))
    return normalized(parts)


def normalized(parts: list[BlendPart]) -> list[BlendPart]:
    """The parts with a voice named twice merged and the weights scaled to sum to 1."""
    merged: dict[str, float] = {}
    for part in parts:
        if not 0 < part.weight <= 100 or part.weight != part.weight:
            raise InvalidBlend(
                f"voice {part.voice[:60]!r} has weight {part.weight:g}: a weight is above 0, at most 100"
            )
        merged[part.voice] = merged.get(part.voice, 0.0) + part.weight
    if not 2 <= len(merged) <= MAX_BLEND_VOICES:
        raise InvalidBlend(f"a blend mixes 2 to {MAX_BLEND_VOICES} different voices; this one has {len(merged)}")
    total = sum(merged.values())
    return [BlendPart(voice, round(weight / total, 6)) for voice, weight in merged.items()]


def written(parts: list[BlendPart]) -> str:
    """A blend as a request writes it."""
    return "+".join(f"{part.voice}:{part.weight:g}" for part in parts)


def blend_ref(parts: list[BlendPart]) -> str:
    """A recipe (each part's kind, reference and weight) as a job's voice reference."""
    ref = "|".join(f"{part.kind}={part.weight:g}={part.voice}" for part in parts)
    if len(ref) > MAX_REF_CHARS:
        raise InvalidBlend(
            f"this blend's voices have names too long to keep ({len(ref)} characters of {MAX_REF_CHARS})"
        )
    return ref


def read_ref(ref: str) -> list[BlendPart]:
    parts = []
    for piece in ref.split("|"):
        kind, weight, voice = piece.split("=", maxsplit=2)
        parts.append(BlendPart(voice, float(weight), VoiceKind(kind)))
    return parts
