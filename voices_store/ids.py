"""Voice ids are slugs: they name database rows, never paths, and anything else is refused up front."""

from __future__ import annotations

import re

from voices_store.errors import InvalidVoiceId

# \Z, not $: `$` also matches before a final newline, which would let "abc\n" through.
VOICE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


def is_voice_id(value: object) -> bool:
    return isinstance(value, str) and VOICE_ID.match(value) is not None


def validate_voice_id(voice_id: str) -> str:
    if not is_voice_id(voice_id):
        raise InvalidVoiceId(
            f"voice id {voice_id!r} is not valid: use 1 to 64 letters, digits, '-' or '_', "
            "starting with a letter or digit",
            details={"pattern": VOICE_ID.pattern},
        )
    return voice_id
