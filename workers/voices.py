"""Turning a job's voice into the latents XTTS conditions on, through the worker's cache."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import torch

from shared import blends, jobs
from shared.errors import NotFound
from shared.jobs import SegmentWork
from shared.voice_kind import VoiceKind
from voices_store import store
from voices_store.cache import VoiceCache
from voices_store.latents import Latents
from workers.engine import VoiceLatents, XttsEngine
from workers.errors import SynthesisError

log = logging.getLogger(__name__)


def to_model(latents: Latents) -> VoiceLatents:
    return VoiceLatents(
        torch.from_numpy(latents.gpt_cond_latent.copy()), torch.from_numpy(latents.speaker_embedding.copy())
    )


def _checked(engine: XttsEngine, latents: Latents, what: str) -> VoiceLatents:
    if latents.width != engine.gpt_width:
        raise SynthesisError(
            f"{what} has GPT latents {latents.width} wide; this worker's model needs {engine.gpt_width} "
            "(it was made with another model: clone it again)"
        )
    return to_model(latents)


def saved_voice(engine: XttsEngine, cache: VoiceCache[VoiceLatents], voice_id: str) -> VoiceLatents:
    """A saved voice, from the cache if this worker holds its current revision."""
    revision = store.current_revision(voice_id)
    if revision is None:
        raise SynthesisError(f"saved voice {voice_id!r} no longer exists (deleted)")

    def load() -> VoiceLatents:
        try:
            latents = store.load_latents(voice_id)
        except NotFound as exc:
            raise SynthesisError(f"saved voice {voice_id!r} no longer exists (deleted)") from exc
        return _checked(engine, latents, f"saved voice {voice_id!r}")

    return cache.get_or_load((VoiceKind.SAVED, voice_id, revision), load)


def blend(voices: list[VoiceLatents], weights: list[float]) -> VoiceLatents:
    """The weighted sum of the voices' GPT latents and of their speaker embeddings (weights summing to 1)."""
    shapes = {(tuple(v.gpt_cond_latent.shape), tuple(v.speaker_embedding.shape)) for v in voices}
    if len(shapes) > 1:
        raise SynthesisError(
            "the blend's voices have latents of different shapes (a voice cloned with another model or from another "
            "number of references): blend voices made alike"
        )
    gpt = _weighted([v.gpt_cond_latent for v in voices], weights)
    speaker = _weighted([v.speaker_embedding for v in voices], weights)
    return VoiceLatents(gpt, speaker)


def _weighted(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    total = torch.zeros_like(tensors[0], dtype=torch.float32)
    for tensor, weight in zip(tensors, weights, strict=True):
        total += weight * tensor.float()
    return total.to(tensors[0].dtype)


def blended_voice(engine: XttsEngine, cache: VoiceCache[VoiceLatents], ref: str) -> VoiceLatents:
    """A blend's voices (built-in, or saved: each through the cache at its current revision), mixed."""
    voices, weights = [], []
    for part in blends.read_ref(ref):
        if part.kind is VoiceKind.BUILTIN:
            voice = engine.builtin_voice(part.voice)
            if voice is None:
                raise SynthesisError(f"this worker's model has no built-in speaker {part.voice!r}")
        else:
            voice = saved_voice(engine, cache, part.voice)
        voices.append(voice)
        weights.append(part.weight)
    return blend(voices, weights)


def resolve_voice(engine: XttsEngine, cache: VoiceCache[VoiceLatents], work: SegmentWork) -> VoiceLatents:
    if work.voice_kind is VoiceKind.BUILTIN:
        voice = engine.builtin_voice(work.voice_ref)
        if voice is None:
            raise SynthesisError(f"this worker's model has no built-in speaker {work.voice_ref!r}")
        return voice
    if work.voice_kind is VoiceKind.SAVED:
        return saved_voice(engine, cache, work.voice_ref)
    if work.voice_kind is VoiceKind.BLEND:
        return blended_voice(engine, cache, work.voice_ref)
    if work.voice_kind is VoiceKind.INLINE:

        def load() -> VoiceLatents:
            return _checked(engine, Latents.from_npz(jobs.inline_voice(work.job_id)), "the request's inline latents")

        return cache.get_or_load((VoiceKind.INLINE, work.voice_ref), load)
    raise SynthesisError(f"unsupported voice kind {work.voice_kind!r}")


def voice_revision(work: SegmentWork) -> str | None:
    """The segment's voice as its audio depends on it: a saved voice (alone or in a blend) at its current revision,
    so that audio made with an overwritten voice is never reused; None where a saved voice no longer exists."""
    if work.voice_kind is VoiceKind.SAVED:
        revision = store.current_revision(work.voice_ref)
        return None if revision is None else f"saved:{work.voice_ref}@{revision}"
    if work.voice_kind is VoiceKind.BLEND:
        revisions = []
        for part in blends.read_ref(work.voice_ref):
            if part.kind is VoiceKind.SAVED:
                if (revision := store.current_revision(part.voice)) is None:
                    return None
                revisions.append(f"{part.voice}@{revision}")
        return f"blend:{work.voice_ref}|{','.join(revisions)}"
    return f"{work.voice_kind.value}:{work.voice_ref}"  # a built-in speaker (the model's), or inline latents' digest


def is_voice(voice_id: str) -> Callable[[Hashable], bool]:
    """Matches the cache keys of every revision of a saved voice."""
    return lambda key: isinstance(key, tuple) and key[:2] == (VoiceKind.SAVED, voice_id)
