"""Domain errors. The API maps each to one HTTP status in a single handler; workers report their text."""

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


class InvalidInput(FarmError):
    status, code = 400, "invalid_input"


class UnknownLanguage(FarmError):
    status, code = 400, "unknown_language"


class UnknownSpeaker(FarmError):
    status, code = 400, "unknown_speaker"


class TextTooLong(FarmError):
    status, code = 413, "text_too_long"


class NotFound(FarmError):
    status, code = 404, "not_found"


class Conflict(FarmError):
    status, code = 409, "conflict"


class Gone(FarmError):
    status, code = 410, "gone"


class TooManyRequests(FarmError):
    status, code = 429, "too_many_requests"


class ServiceUnavailable(FarmError):
    status, code = 503, "service_unavailable"


class JobConflict(FarmError):
    """The job is not in a state that allows this (e.g. audio of a job that has not finished)."""

    status, code = 409, "job_not_ready"


class SynthesisFailed(FarmError):
    """A worker could not synthesize the job; the job's error says why."""

    status, code = 502, "synthesis_failed"
