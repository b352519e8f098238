"""Domain errors of the workers (each a `FarmError` with one status and one code)."""

from __future__ import annotations

from shared.errors import FarmError


class SynthesisError(FarmError):
    """The model cannot synthesize this input; retrying would not help (the job fails with this message)."""

    status, code = 422, "cannot_synthesize"


class ModelUnavailable(FarmError):
    """The configured model cannot be loaded; the message is one line that says why and what to do."""

    status, code = 503, "model_unavailable"
