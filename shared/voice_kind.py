"""The kinds of voice a job can be conditioned on (kept apart from the SQL models so that the API's request and
response models can use it without loading SQLAlchemy)."""

from __future__ import annotations

import enum


class VoiceKind(enum.StrEnum):
    """What a job's voice is; `Job.voice_ref` names it within its kind. The API decides, the worker that runs a
    segment loads it (workers/voices.py)."""

    BUILTIN = "builtin"  # a built-in speaker of the checkpoint: ref is its name
    SAVED = "saved"  # a saved voice: ref is its key, `tenant/id`
    INLINE = "inline"  # latents sent with the request, kept in `Job.inline_voice`: ref is their digest
    BLEND = "blend"  # built-in and saved voices mixed by weight: ref is the recipe (shared/blends.py)
