"""Bounds on what a request body may be, checked before any endpoint reads it.

- Size: MAX_UPLOAD_MB is for `/clone_speaker`'s recordings. Every other endpoint takes a small JSON document (a text
  of MAX_TEXT_CHARS, or latents of 32 x 1024 numbers: well under 2 MB), so its body is capped at
  MAX_JSON_BODY_BYTES: a 20 MB array of numbers would otherwise become hundreds of MB of Python objects.
- Shape: a body that claims to be JSON must parse to an object. JSON nested deeper than Python's recursion limit
  makes `json.loads` raise RecursionError (not ValueError), which used to escape as a 500; so does a JSON form field
  (`options`), which flask-openapi3 parses itself. Both are parsed here first and refused with a 400.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import error_response

MAX_JSON_BODY_BYTES = 4 * 2**20
UPLOAD_ENDPOINTS = frozenset({"voices.clone_speaker"})


_NOT_PARSED = object()


def _parse(text: str | bytes, what: str) -> tuple[object, Response | None]:
    """(the parsed value, None), or (_NOT_PARSED, a 400) when `text` is JSON nested too deeply, or is not JSON at
    all where JSON is required (`strict`: the request body). A form field that is not JSON is no error here:
    flask-openapi3 passes it on as a string, and its model says what it should be."""
    try:
        return json.loads(text), None
    except RecursionError:
        return _NOT_PARSED, error_response(400, "invalid_json", f"{what} is JSON nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:
        if what == BODY:
            return _NOT_PARSED, error_response(400, "invalid_json", f"the request body is not valid JSON: {exc}")
        return _NOT_PARSED, None


BODY = "the request body"


def check_request_body() -> Response | None:
    """Runs before every request, before the endpoint (or flask-openapi3's validation) reads the body."""
    if request.endpoint not in UPLOAD_ENDPOINTS:
        request.max_content_length = MAX_JSON_BODY_BYTES
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    if request.is_json:
        data = request.get_data(cache=True)
        if not data:
            return None
        body, refused = _parse(data, BODY)
        if refused is not None:
            return refused
        if not isinstance(body, dict):
            return error_response(400, "validation_error", "the request body must be a JSON object")
    elif request.mimetype == "multipart/form-data":
        for name, value in request.form.items():
            _value, refused = _parse(value, f"form field {name!r}")
            if refused is not None:
                return refused
    return None


def register(app: Flask) -> None:
    app.before_request(check_request_body)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        if request.endpoint in UPLOAD_ENDPOINTS:
            limit = app.config["MAX_CONTENT_LENGTH"] // 2**20
            return error_response(413, "request_too_large", f"the request is larger than MAX_UPLOAD_MB={limit} MB")
        return error_response(
            413, "request_too_large", f"the request body is larger than {MAX_JSON_BODY_BYTES // 2**20} MB"
        )
