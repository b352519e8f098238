"""Voice ids are slugs: they name database rows, never paths, and anything else is refused up front."""

from __future__ import annotations

import re

from shared.tenants import DEFAULT_TENANT
from voices_store.errors import InvalidVoiceId

# \Z, not $: `$` also matches before a final newline, which would let "abc\n" through.
VOICE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
# The same rule for the OpenAPI document (ECMA-262 regular expressions, where `$` is the very end).
VOICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


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


def voice_key(tenant: str, voice_id: str) -> str:
    """How a job names a saved voice for the workers: `tenant/id`, or the bare id in the default tenant (so voices
    saved before tenants, PRELOAD_VOICES and worker cache keys keep their names). Neither part may contain `/`."""
    return voice_id if tenant == DEFAULT_TENANT else f"{tenant}/{voice_id}"


def split_voice_key(key: str) -> tuple[str, str]:
    """(tenant, voice id) of a voice key."""
    tenant, _, voice_id = key.rpartition("/")
    return tenant or DEFAULT_TENANT, voice_id
