"""The one JSON error contract of every endpoint:

    {"error": {"status": 400, "code": "unknown_language", "message": "...", "details": ...}}

Domain errors (`FarmError` subclasses, from every layer), request validation errors, HTTP errors (404, 405; 413 is
answered by `api/request_bounds.py`) and unexpected failures are all mapped here, in one place. Under /v1/ (the
OpenAI-compatible API) the same body also carries the fields OpenAI's clients read, `type` and `param`
(`code` and `message` are already shared), so that `openai.BadRequestError` and its kin show the farm's message.
The API's own domain errors are defined here too; Server-Sent Events carry the same body in their `error` event.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from flask import Flask, Response, has_request_context, request
from pydantic import ValidationError
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.errors import FarmError, InvalidInput, TooManyRequests

log = logging.getLogger(__name__)


class CloneFailed(FarmError):
    """The worker could not compute the voice's latents."""

    status, code = 502, "clone_failed"


class CloneTimeout(FarmError):
    """No worker finished cloning within CLONE_TIMEOUT_SECONDS."""

    status, code = 504, "clone_timeout"


class ClientLeft(FarmError):
    """The client closed its connection before the response existed (nobody reads this; the log shows it).
    499 is the status nginx uses for it."""

    status, code = 499, "client_closed_request"


class IdempotencyConflict(FarmError):
    """An Idempotency-Key reused for a different request."""

    status, code = 409, "idempotency_key_reused"


class ShuttingDown(FarmError):
    """This API process is stopping: new synthesis goes to another one (or after the restart)."""

    status, code = 503, "shutting_down"


class FarmFull(TooManyRequests):
    """Every live stream the workers carry faster than real time is taken for longer than MAX_LIVE_WAIT_SECONDS."""

    status, code = 503, "farm_full"


class TooManyAudioTokens(FarmError):
    """A request whose audio would exceed MAX_TOKENS_PER_REQUEST (it can never be admitted: 413, not 429)."""

    status, code = 413, "too_many_audio_tokens"


class StudioSpeakersNotReady(FarmError):
    """Workers are up but none has published its built-in speakers' latents yet (they do so at start)."""

    status, code = 503, "studio_speakers_not_ready"


OPENAI_PREFIX = "/v1/"
# OpenAI's error types, by status (its clients show them; 4xx without an entry are invalid requests).
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
# The request field a domain error is about, named as /v1/audio/speech names it.
OPENAI_PARAMS = {
    "unknown_speaker": "voice",
    "unknown_language": "language",
    "nothing_to_speak": "input",
    "text_too_long": "input",
    "too_many_audio_tokens": "input",
}


def _openai_fields(body: dict[str, Any]) -> dict[str, Any]:
    status = int(body["status"])
    kind = "server_error" if status >= 500 else OPENAI_TYPES.get(status, "invalid_request_error")
    param = OPENAI_PARAMS.get(body["code"])
    details = body.get("details")
    if param is None and isinstance(details, list) and details and isinstance(details[0], dict):
        param = details[0].get("field") or None  # a validation error: its first field
    return {**body, "type": kind, "param": param}


# ElevenLabs' paths (api/routes/elevenlabs.py): its clients read `detail: {status, message}`, beside the farm's own.
ELEVENLABS_PREFIXES = ("/v1/text-to-speech/", "/v1/voices")


def _error_body(body: dict[str, Any]) -> str:
    if not has_request_context() or not request.path.startswith(OPENAI_PREFIX):
        return json.dumps({"error": body})
    document: dict[str, Any] = {"error": _openai_fields(body)}
    if request.path.startswith(ELEVENLABS_PREFIXES):
        document["detail"] = {"status": body["code"], "message": body["message"]}
    return json.dumps(document)


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        body["details"] = details
    return Response(_error_body(body), status=status, mimetype="application/json")


def farm_error_response(exc: FarmError) -> Response:
    return Response(_error_body(exc.body()), status=exc.status, mimetype="application/json", headers=exc.headers())


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()) if part != "__root__")
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if not loc and err.get("type") == "model_type":
        return "the request body must be a JSON object"
    if err.get("type") == "extra_forbidden":
        return f"unknown field {loc!r}"
    if err.get("type") == "missing":
        return f"{loc} is required"
    return f"{loc}: {msg}" if loc else str(msg)


def invalid_input_from(exc: ValidationError, prefix: str) -> InvalidInput:
    """A validation error of a nested document (such as /clone_speaker's `options`) as a domain error."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    problems = [f"{prefix}.{_describe(e)}" if e.get("loc") else f"{prefix}: {_describe(e)}" for e in errors]
    return InvalidInput("; ".join(problems), details=problems)


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3's validation callback: a 400 naming every field that is wrong."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    messages = [_describe(e) for e in errors]
    details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": _describe(e)} for e in errors]
    return error_response(400, "validation_error", "; ".join(messages), details)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(FarmError)
    def _farm_error(exc: FarmError) -> Response:
        return farm_error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        # The headers werkzeug gives the status, such as a 405's Allow (the route's methods: RFC 9110 requires it).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError) -> Response:
        log.error("Redis error on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "redis_unavailable", f"Redis is not answering ({type(exc).__name__}); retry shortly")

    @app.errorhandler(DataError)
    def _data_refused(exc: DataError) -> Response:
        # The database refused a value (a safety net: input checks should catch it first, and log says which).
        log.warning("database refused a value on %s %s: %s", request.method, request.path, exc.orig)
        return error_response(400, "invalid_input", "the database cannot store a value of this request")

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError) -> Response:
        log.error("database error on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "database_unavailable", "the database is not answering; retry shortly")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to handle this request; see its log")
