"""Voice ids are slugs: they name database rows, never paths, and anything else is refused up front."""

from __future__ import annotations

import re

from shared.errors import InvalidInput

VOICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def validate_voice_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not VOICE_ID.match(voice_id):
        raise InvalidInput(
            f"voice id {voice_id!r} is not valid: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit",
            details={"pattern": VOICE_ID.pattern},
        )
    return voice_id
