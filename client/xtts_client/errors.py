"""What can go wrong, as typed exceptions: the farm's own JSON errors, and not reaching the farm at all."""

from __future__ import annotations

import json
from typing import Any

import requests


class XTTSError(Exception):
    """Base of every error this package raises."""


class FarmError(XTTSError):
    """An error the farm answered, with its JSON error body: `{"error": {status, code, message, details}}`.

    Also raised for the `error` event of a job's Server-Sent Events, which carries the same body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after: float | None = None  # seconds, from a Retry-After header (429, 503)

    @classmethod
    def from_body(cls, body: Any, status: int) -> FarmError:
        """From a parsed error body; anything not in the farm's shape is reported as it came."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return cls(
                int(error.get("status") or status),
                str(error.get("code") or "error"),
                error["message"],
                error.get("details"),
            )
        return cls(status, "http_error", f"HTTP {status}: {json.dumps(body)[:200]}")

    @classmethod
    def from_response(cls, response: requests.Response) -> FarmError:
        try:
            body = response.json()
        except ValueError:
            # Not the farm answering (a proxy in front of it, say): keep what it said, briefly.
            text = " ".join(response.text.split())[:200] or response.reason or "no body"
            error = cls(response.status_code, "http_error", f"HTTP {response.status_code}: {text}")
        else:
            error = cls.from_body(body, response.status_code)
        retry_after = response.headers.get("Retry-After", "")
        error.retry_after = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
        return error


class FarmUnreachable(XTTSError):
    """No answer from the farm: connection refused, name not resolved, timed out."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the farm at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


class StreamBroken(XTTSError):
    """A job's stream kept breaking off, and reconnecting from its cursor did not succeed in time."""

    def __init__(self, job_id: str, cursor: str | None, reason: str) -> None:
        where = f"cursor {cursor}" if cursor else "its start"
        super().__init__(f"the stream of job {job_id} broke off at {where} and could not be resumed: {reason}")
        self.job_id = job_id
        self.cursor = cursor
        self.reason = reason


class UnsupportedFormat(XTTSError):
    """The farm did not answer the audio format that was asked for (it does not support it yet)."""


def describe_connection_error(exc: BaseException) -> str:
    """A short human reason for a requests connection failure ("connection refused", "timed out", ...)."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("timed out", "timed out"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "the server closed the connection"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__
