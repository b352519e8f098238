"""Domain errors of the voices layer (each a `FarmError` with one status and one code)."""

from __future__ import annotations

from shared.errors import FarmError, InvalidInput


class InvalidVoiceId(InvalidInput):
    code = "invalid_voice_id"


class InvalidLatents(InvalidInput):
    code = "invalid_latents"


class VoiceExists(FarmError):
    status, code = 409, "voice_exists"


class UploadTooLarge(FarmError):
    """One uploaded file is over MAX_UPLOAD_MB."""

    status, code = 413, "upload_too_large"


class NotAudio(InvalidInput):
    code = "not_audio"


class UnusableAudio(InvalidInput):
    """Audio that decodes but cannot be cloned from: empty, silent, too short or too long."""

    code = "unusable_audio"


class ReferenceTooLong(UnusableAudio):
    """Decoding went past the duration limit and was stopped there (same code as every unusable reference)."""


class DecodeTimeout(InvalidInput):
    """The decoder did not finish within its wall-clock limit and was killed: the input is pathological."""

    code = "decode_timeout"


class TooMuchReferenceAudio(FarmError):
    """One request carries more reference files, or more seconds of them in all, than the API accepts."""

    status, code = 413, "too_much_reference_audio"
