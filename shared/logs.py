"""Logging for every process of the farm (API, workers, command-line tools), set up in this one place.

Every line about a job carries its job id and tenant: the API and the workers bind them to the current context
(`bind`) when they learn them, and a filter on the one handler copies them into each record. `LOG_FORMAT=text`
(the default) gives readable lines with ` job=<id> tenant=<t>` when bound; `LOG_FORMAT=json` gives one JSON object
per line, for log collectors. `DEBUG` turns on debug records.

The context lives in `contextvars`: a request's thread or a Celery task's thread sees only its own ids, and
`clear` (at the start and the end of each request or task) keeps a thread's next request from inheriting them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("xtts_job_id", default=None)
_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("xtts_tenant", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
# Standard LogRecord attributes: everything else on a record was passed with `extra=` and goes into the JSON.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def bind(*, job_id: str | None = None, tenant: str | None = None) -> None:
    """Attach these ids to every record logged from now on in this context (None leaves one as it is)."""
    if job_id is not None:
        _job_id.set(job_id)
    if tenant is not None:
        _tenant.set(tenant)


def clear() -> None:
    _job_id.set(None)
    _tenant.set(None)


def current() -> dict[str, str]:
    found = {"job_id": _job_id.get(), "tenant": _tenant.get()}
    return {k: v for k, v in found.items() if v is not None}


class ContextFilter(logging.Filter):
    """Copies the bound job id and tenant onto each record (`record.job_id`, `record.tenant`, and `record.context`
    for the text format); ids a caller passed with `extra=` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        ids = {"job": getattr(record, "job_id", None), "tenant": getattr(record, "tenant", None)}
        record.context = "".join(f" {key}={value}" for key, value in ids.items() if value is not None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, job_id and tenant when known,
    any `extra=` fields, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key != "context" and value is not None:
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class FarmHandler(logging.StreamHandler):
    """The farm's handler (to stderr), a class of its own so that setting logging up again replaces it and
    leaves other handlers (pytest's capture, for one) alone."""


def make_handler(settings: Settings, filters: Sequence[logging.Filter] = ()) -> logging.Handler:
    handler = FarmHandler(sys.stderr)
    for extra in filters:  # before the context filter: they may find ids of their own
        handler.addFilter(extra)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.LOG_FORMAT == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def setup(settings: Settings, filters: Sequence[logging.Filter] = ()) -> None:
    """The process's logging: the farm's handler on the root logger (every library's records reach it), at DEBUG
    or INFO. Called by the API's app factory and by the worker at start; calling it again replaces the handler
    (under gunicorn, the one its `logconfig_dict` installed)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, FarmHandler):
            root.removeHandler(old)
    root.addHandler(make_handler(settings, filters))
    root.setLevel(logging.DEBUG if settings.DEBUG else logging.INFO)
    logging.captureWarnings(True)  # Python's warnings as records too: one format for every line
    # Chatty at DEBUG, and about connections rather than jobs.
    for noisy in ("urllib3", "kombu", "amqp", "numba", "matplotlib", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.INFO)


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error and access logs go through the same handler, format and filter as
    the API's own records (an access line of a job's request then carries the job id too)."""
    formatter: dict[str, Any] = (
        {"()": "shared.logs.JsonFormatter"} if settings.LOG_FORMAT == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "shared.logs.ContextFilter"}},
        "formatters": {"farm": formatter},
        "handlers": {
            "farm": {
                "class": "shared.logs.FarmHandler",
                "stream": "ext://sys.stderr",
                "formatter": "farm",
                "filters": ["context"],
            }
        },
        "root": {"level": "DEBUG" if settings.DEBUG else "INFO", "handlers": ["farm"]},
        "loggers": {
            "gunicorn.error": {"level": "DEBUG" if settings.DEBUG else "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
