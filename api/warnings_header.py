"""What a synthesis request's text could not be said as asked (a tag the farm does not speak, code left out), told
to the client in the `X-TTS-Warnings` header of its response: a JSON array of strings, ASCII-escaped. Never spoken;
POST /v1/text/normalize answers the same list in its body."""

from __future__ import annotations

import json

from flask import Flask, Response, g

HEADER = "X-TTS-Warnings"
MAX_HEADER_CHARS = 4000  # proxies refuse long headers (8 KiB all together is common)


def note(warnings: list[str]) -> None:
    g.tts_warnings = list(warnings)


def header_value(warnings: list[str]) -> str:
    """As many of the warnings as fit, as a JSON array."""
    kept: list[str] = []
    for warning in warnings:
        if len(json.dumps([*kept, warning])) > MAX_HEADER_CHARS:
            break
        kept.append(warning)
    return json.dumps(kept)


def register(app: Flask) -> None:
    @app.after_request
    def _add_warnings(response: Response) -> Response:
        warnings = g.get("tts_warnings")
        if warnings:
            response.headers[HEADER] = header_value(warnings)
        return response
