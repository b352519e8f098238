"""The API's Flask app: hooks, error handlers and blueprints, on the settings it is given or the environment's."""

from __future__ import annotations

from celery import Celery
from flask import Flask, request
from flask_openapi3 import Info

from api import admission, auth, request_bounds, telemetry, warnings_header
from api.client import ClientDeadlines
from api.errors import register_error_handlers, validation_error_response
from api.lifecycle import lifecycle
from api.limits import ConcurrencyLimit
from api.openapi import FarmOpenAPI
from api.schemas.common import ErrorResponse
from celery_config import celery_config
from shared import logs
from shared.settings import Settings, configure, get_settings

API_VERSION = "1.0.0"


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """The API's Celery client: it only sends tasks, by name, so worker code (and torch) stays out."""
    celery = Celery(app.name)
    celery.conf.update(celery_config(settings))
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def _no_new_work_while_stopping() -> None:
    """After SIGTERM, a keep-alive connection may still bring a request: reads are answered, new work is not."""
    if request.method == "POST":
        lifecycle.refuse_new_work()


def create_app(settings: Settings | None = None) -> FarmOpenAPI:
    """The API. `settings`, when given, becomes the process's settings object (database, Redis, limits: every
    part of the API and of the shared layer reads it); otherwise they come from the environment."""
    if settings is not None:
        configure(settings)
    settings = get_settings()
    logs.setup(settings)
    app = FarmOpenAPI(
        "api",  # the package's name, not this module's: Flask names its logger and finds its root path by it
        info=Info(
            title="XTTS synthesis farm",
            version=API_VERSION,
            description="Streaming XTTS-v2 speech synthesis and voice cloning served by a farm of Celery workers. "
            "Try it in the browser on the farm's [web page](/ui).",
        ),
        validation_error_status=400,
        validation_error_model=ErrorResponse,
        validation_error_callback=validation_error_response,
        doc_prefix="/openapi",
    )
    # MAX_UPLOAD_MB bounds a whole upload request (all its files), checked before the body is read.
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_UPLOAD_MB * 2**20
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["xtts_limit"] = ConcurrencyLimit(
        settings.MAX_CONCURRENT_REQUESTS, settings.REQUEST_QUEUE_TIMEOUT_SECONDS
    )
    celery_init_app(app, settings)
    # Hooks run in this order: who is calling (headers only), then bounds on the body, before any endpoint reads it.
    auth.register(app)
    request_bounds.register(app)
    register_error_handlers(app)
    app.before_request(_no_new_work_while_stopping)
    admission.register(app)  # when a live request's audio should start (X-Expected-Start-Seconds)
    telemetry.register(app)  # request counts for /metrics, job ids on log lines
    warnings_header.register(app)  # what a text could not be said as asked (X-TTS-Warnings)

    from api.routes import (
        books,
        cache,
        elevenlabs,
        info,
        jobs,
        lexicons,
        metrics,
        openai_api,
        synthesis,
        text,
        voices,
        webpage,
    )

    blueprints = (
        synthesis.bp,
        jobs.bp,
        voices.bp,
        cache.bp,
        info.bp,
        metrics.bp,
        openai_api.bp,
        elevenlabs.bp,
        text.bp,
        lexicons.bp,
        books.bp,
    )
    for blueprint in blueprints:
        app.register_api(blueprint)
    app.register_blueprint(webpage.bp)  # the web page's files: not API operations, so not in the OpenAPI document
    app.register_blueprint(elevenlabs.sockets)  # WebSockets: GETs that upgrade, not OpenAPI operations either
    app.wsgi_app = ClientDeadlines(app.wsgi_app, settings.CLIENT_TIMEOUT_SECONDS)  # type: ignore[method-assign]
    return app
