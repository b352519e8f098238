"""What the farm offers and how it is: languages, built-in speakers, health; Swagger UI at /."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, redirect
from flask_openapi3 import APIBlueprint, Tag
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.admission import live_capacity
from api.auth import caller
from api.errors import StudioSpeakersNotReady
from api.responses import json_model
from api.schemas.common import ErrorResponse
from api.schemas.info import HealthResponse, LanguagesResponse, RequestSlots, SpeakersResponse, StudioSpeakers
from api.submission import LiveWorkers
from shared import metrics, registry, studio_speakers
from shared.db import get_engine
from shared.errors import NoWorkers
from shared.redis_client import get_redis

NO_WORKER_REASON = (
    "no synthesis worker is running: new synthesis requests are refused (no_workers) and open streams wait for one "
    "to start"
)

bp = APIBlueprint("info", __name__, abp_tags=[Tag(name="info", description="Languages, speakers, health")])


@bp.get("/languages", responses={200: LanguagesResponse})
def languages() -> Response:
    """Languages the live workers' model speaks (XTTS-v2's list when no worker is up yet), as a bare list like the
    official XTTS server's; the `X-Languages-Source` header says which (`workers` or `xtts_v2`)."""
    langs, source = LiveWorkers.now().languages
    return json_model(LanguagesResponse(langs), headers={"X-Languages-Source": source})


@bp.get("/available_speakers", responses={200: SpeakersResponse})
def available_speakers() -> Response:
    """Built-in speakers of the checkpoint the live workers serve."""
    catalog = registry.model_catalog(get_redis())
    return json_model(SpeakersResponse(speakers=catalog[1] if catalog else []))


@bp.get("/studio_speakers", responses={200: StudioSpeakers, 503: ErrorResponse})
def studio_speakers_latents() -> Response:
    """The built-in speakers with their latents, as coqui's official XTTS server answers (its Gradio demo reads
    them): `{name: {"speaker_embedding": [...], "gpt_cond_latent": [[...], ...]}}`. The workers publish them when they
    start: 503 until one has."""
    r = get_redis()
    workers = registry.live_workers(r)
    if not workers:
        raise NoWorkers("no synthesis worker is running, so the built-in speakers are not known; start a worker")
    document = studio_speakers.read(r, studio_speakers.digests_of(workers))
    if document is None:
        raise StudioSpeakersNotReady(
            "the workers have not published their built-in speakers' latents yet (they do so as they start); "
            "retry in a few seconds"
        )
    # Served as the worker wrote it: parsing and re-encoding tens of MB per request would buy nothing.
    return Response(document, mimetype="application/json")


def _probe(check: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # health reports failures instead of raising them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _database_ping() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _listening(redis_ok: bool, db_ok: bool) -> dict[str, Any]:
    """What the farm still has to make and what its listeners heard, from whichever of SQL and Redis answers."""
    figures: dict[str, Any] = {}
    if db_ok:
        with contextlib.suppress(SQLAlchemyError):  # went away since its probe: left out, as while it is away
            figures["backlog_audio_seconds"] = metrics.backlog_audio_seconds()
    if redis_ok:
        with contextlib.suppress(RedisError):
            playback = metrics.playback_totals(get_redis())
            figures["stall_seconds"] = {p: round(f["stall_seconds"], 3) for p, f in playback.items()}
            figures["deadline_misses"] = {p: int(f["deadline_misses"]) for p, f in playback.items()}
    return figures


def _unavailable_reason(redis_ok: bool, db_ok: bool) -> str:
    down = [name for name, ok in (("Redis", redis_ok), ("the database", db_ok)) if not ok]
    return f"{' and '.join(down)} not answering: the API can take no request until it answers again"


def _health(workers_needed: bool) -> Response:
    redis_state = _probe(lambda: get_redis().ping())
    db_state = _probe(_database_ping)
    workers = registry.live_workers(get_redis()) if redis_state["ok"] else []
    reason = None
    if not (redis_state["ok"] and db_state["ok"]):
        status, reason = "unavailable", _unavailable_reason(redis_state["ok"], db_state["ok"])
    elif not workers:
        status, reason = "no_workers", NO_WORKER_REASON
    else:
        status = "ok"
    slots = current_app.extensions["xtts_limit"].state()
    operator = caller().admin  # worker details name the jobs they run: not for every tenant's eyes
    if not operator:  # nor do the services' error messages (they name internal hosts and ports)
        redis_state, db_state = ({k: v for k, v in s.items() if k != "error"} for s in (redis_state, db_state))
    body = HealthResponse(
        status=status,
        reason=reason,
        api="ok",
        redis=redis_state,
        database=db_state,
        live_workers=len(workers),
        live_streams=sum(int((w.get("held") or {}).get("live", 0)) for w in workers),
        live_capacity=live_capacity(workers),
        **_listening(redis_state["ok"], db_state["ok"]),
        workers=workers if operator else None,
        requests=RequestSlots(limit=slots.limit, in_use=slots.in_use, waiting=slots.waiting) if operator else None,
    )
    serving = status == "ok" or (status == "no_workers" and not workers_needed)
    return json_model(body, 200 if serving else 503)


@bp.get("/health", responses={200: HealthResponse, 503: HealthResponse})
def health() -> Response:
    """Whether the farm can synthesize: 200 when the API, Redis, the database and at least one worker are up; 503
    with `status` (`no_workers` or `unavailable`) and a `reason` otherwise. With an admin key (or keys off), every
    live worker with the model it has loaded and this API process's request slots. Needs no key."""
    return _health(workers_needed=True)


@bp.get("/health/api", responses={200: HealthResponse, 503: HealthResponse})
def health_api() -> Response:
    """Whether this API process can take requests, workers or not: 200 when Redis and the database answer (the
    body still says `no_workers` when none is up), 503 otherwise. For a load balancer or a container health check
    that must not take the API out of service while workers restart. Needs no key."""
    return _health(workers_needed=False)


@bp.get("/", doc_ui=False)
def index() -> Response:
    """Swagger UI."""
    return redirect("/openapi/swagger")  # type: ignore[return-value]
