"""Bounds on what a request body may be, checked before any endpoint reads it.

- Size: MAX_UPLOAD_MB is for `/clone_speaker`'s recordings. Every other endpoint takes a small JSON document (a text
  of MAX_TEXT_CHARS, latents of at most MAX_GPT_ROWS x 1024 numbers: under 3 MB at full precision), so its body is
  capped at MAX_JSON_BODY_BYTES: a 20 MB array of numbers would otherwise become hundreds of MB of Python objects.
- NUL characters: PostgreSQL cannot store them in text (psycopg raises DataError, which was a 500 there and not on
  SQLite), and no voice id, job id, text or name needs one: refused in the path, the query and every JSON string.
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
UPLOAD_ENDPOINTS = frozenset({"voices.clone_speaker", "books.create_book"})


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


def _holds_nul(value: object) -> bool:
    """Whether a parsed JSON value has a NUL character in any string (keys included); iterative, so depth is free."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _nul_refused(where: str) -> Response:
    return error_response(400, "invalid_input", f"{where} contains a NUL character (U+0000), which no field accepts")


def check_request_body() -> Response | None:
    """Runs before every request, before the endpoint (or flask-openapi3's validation) reads the body."""
    if request.endpoint not in UPLOAD_ENDPOINTS:
        request.max_content_length = MAX_JSON_BODY_BYTES
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.args.items(multi=True)):
        return _nul_refused("the URL")
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
        if _holds_nul(body):
            return _nul_refused("the request body")
    elif request.mimetype == "multipart/form-data":
        for name, value in request.form.items(multi=True):
            parsed, refused = _parse(value, f"form field {name!r}")
            if refused is not None:
                return refused
            if "\x00" in value or _holds_nul(parsed):
                return _nul_refused(f"form field {name!r}")
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
