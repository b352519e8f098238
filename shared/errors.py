"""Domain errors of the shared layer, and `FarmError`, the base of every error the farm reports.

Each subclass has one HTTP status and one stable `code`, and each code has one meaning. The API maps every
`FarmError` to the JSON error contract in a single handler; Server-Sent Events carry the same body. Errors of
the other layers live in `voices_store/errors.py`, `workers/errors.py` and `api/errors.py`.
"""

from __future__ import annotations

from typing import Any


class FarmError(Exception):
    """Base of every error the farm reports to a client. `code` is stable; `message` is for humans."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the body (Retry-After for 429s)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The error contract: `{"status", "code", "message", "details"}` (details only when there are any)."""
        body: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidInput(FarmError):
    status, code = 400, "invalid_input"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


class UnknownLanguage(FarmError):
    status, code = 400, "unknown_language"


class UnknownVoice(FarmError):
    """Neither a saved voice of the caller's tenant nor a built-in speaker (the code keeps the public name)."""

    status, code = 400, "unknown_speaker"


class NothingToSpeak(InvalidInput):
    """A text of punctuation, symbols, spaces or invisible characters only."""

    code = "nothing_to_speak"


class TextTooLong(FarmError):
    status, code = 413, "text_too_long"


class InvalidDocument(InvalidInput):
    """A document (a book) that cannot be read: not the format it claims, or built to harm its reader (a zip bomb,
    an entity declaration, a path that leaves the archive)."""

    code = "invalid_document"


class DocumentTooLarge(FarmError):
    status, code = 413, "document_too_large"


class DrmProtected(FarmError):
    """An EPUB whose content is encrypted (DRM): the farm cannot read it."""

    status, code = 422, "drm_protected"


class NotFound(FarmError):
    status, code = 404, "not_found"


class AudioExpired(FarmError):
    """The job's audio streams expired (STREAM_TTL_SECONDS) and can no longer be delivered."""

    status, code = 410, "audio_expired"


class TooManyRequests(FarmError):
    """A limit is reached (concurrent requests, jobs, queued segments): try again after `retry_after` seconds."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NoWorkers(FarmError):
    """No synthesis worker is alive to run (or to check) the request."""

    status, code = 503, "no_workers"


class JobNotReady(FarmError):
    """The job has not finished yet (e.g. its complete audio was asked for)."""

    status, code = 409, "job_not_ready"


class JobCancelled(FarmError):
    """The job was cancelled before it finished."""

    status, code = 409, "job_cancelled"


class SynthesisFailed(FarmError):
    """A worker could not synthesize the job; the job's error says why."""

    status, code = 502, "synthesis_failed"
