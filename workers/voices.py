"""Turning a job's speaker reference into the latents XTTS conditions on."""

from __future__ import annotations

from shared.jobs import SegmentWork
from workers.engine import SynthesisError, VoiceLatents, XttsEngine


def resolve_voice(engine: XttsEngine, work: SegmentWork) -> VoiceLatents:
    if work.speaker_kind == "builtin":
        voice = engine.builtin_voice(work.speaker_ref)
        if voice is None:
            raise SynthesisError(f"this worker's model has no built-in speaker {work.speaker_ref!r}")
        return voice
    raise SynthesisError(f"unsupported speaker kind {work.speaker_kind!r}")
