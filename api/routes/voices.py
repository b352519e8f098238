"""Voices: cloning on the workers (/clone_speaker), saved voices any worker can use."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import ValidationError

from api.errors import invalid_input_from
from api.schemas import (
    CloneForm,
    CloneOptions,
    ErrorResponse,
    SaveVoiceBody,
    VoicePath,
    VoiceQuery,
    VoiceResponse,
    VoicesPage,
    VoicesQuery,
)
from api.submission import LiveWorkers
from shared import uploads, voice_control
from shared.errors import Conflict, FarmError, InvalidInput, ServiceUnavailable
from shared.redis_client import get_redis
from shared.settings import get_settings
from voices_store import store
from voices_store.ids import validate_voice_id
from voices_store.latents import Latents, parse_latents
from voices_store.uploads import Reference, decode_reference, references_hash

log = logging.getLogger(__name__)
bp = APIBlueprint("voices", __name__, abp_tags=[Tag(name="voices", description="Voice cloning and saved voices")])

CLONE_TASK = "xtts.clone_voice"
ERRORS = {400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse}


class CloneFailed(FarmError):
    status, code = 502, "clone_failed"


class CloneTimeout(FarmError):
    status, code = 504, "clone_timeout"


def _options(raw: dict[str, Any] | str | None) -> CloneOptions:
    if not raw:
        return CloneOptions()
    try:
        return CloneOptions.model_validate(raw) if isinstance(raw, dict) else CloneOptions.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidInput(f"options is not valid JSON: {raw[:80]!r}") from exc
        raise invalid_input_from(exc, prefix="options") from exc


def _clone(references: list[Reference]) -> tuple[str, Latents, bool]:
    """(content hash, latents, reused): the stored result for this audio, or a worker's new one."""
    model = LiveWorkers.now().model_name
    if model is None:
        raise ServiceUnavailable("no synthesis worker is running to clone the voice; start a worker and retry")
    content_hash = references_hash(references, model)
    stored = store.get_clone_result(content_hash)
    if stored is not None:
        return content_hash, stored, True
    settings, r = get_settings(), get_redis()
    uploads.stage(r, content_hash, [ref.samples for ref in references], ttl=settings.CLONE_TIMEOUT_SECONDS + 300)
    result = current_app.extensions["celery"].send_task(CLONE_TASK, args=[content_hash])
    try:
        result.get(timeout=settings.CLONE_TIMEOUT_SECONDS, propagate=True)
    except CeleryTimeout as exc:
        raise CloneTimeout(f"no worker finished cloning within CLONE_TIMEOUT_SECONDS={settings.CLONE_TIMEOUT_SECONDS}; "
                           "the farm is busy, retry later (a late result is kept and reused)") from exc
    except Exception as exc:
        uploads.discard(r, content_hash)
        raise CloneFailed(f"the worker could not clone this voice: {type(exc).__name__}: {exc}") from exc
    uploads.discard(r, content_hash)
    stored = store.get_clone_result(content_hash)
    if stored is None:
        raise CloneFailed("the worker reported success but stored no result")
    return content_hash, stored, False


@bp.post("/clone_speaker", responses={200: {"description": "latents (json) or the saved voice (save)"}, 413: ErrorResponse,
                                       502: ErrorResponse, 503: ErrorResponse, 504: ErrorResponse, **ERRORS})
def clone_speaker(form: CloneForm) -> Response:
    """Clone a voice from one or more recordings; a worker runs the model, the API waits a bounded time.

    `options` (JSON): `response_format` `json` returns `gpt_cond_latent` [32, width] and `speaker_embedding`
    [512]; `save` stores them as the voice `save_id` (with `name`, `description`; `overwrite` to replace).
    Cloning the same audio again reuses the stored result instead of running the model.
    """
    options = _options(form.options)
    if options.response_format == "save":
        validate_voice_id(options.save_id)
        if not options.overwrite and store.voice_exists(options.save_id):
            raise Conflict(f"voice {options.save_id!r} already exists; send overwrite=true to replace it")
    settings = get_settings()
    files = [f for f in form.wav_file if f is not None]
    if not files:
        raise InvalidInput("no reference audio: send one or more files in the wav_file field")
    references = [
        decode_reference(f.filename or f"file {i + 1}", f.read(), max_bytes=settings.MAX_UPLOAD_MB * 2**20,
                         max_seconds=settings.MAX_REFERENCE_SECONDS)
        for i, f in enumerate(files)
    ]
    content_hash, latents, reused = _clone(references)
    summary: dict[str, Any] = {
        "content_hash": content_hash, "reused": reused,
        "reference_seconds": round(sum(ref.seconds for ref in references), 3),
    }
    if options.response_format == "save":
        info = store.save_voice(options.save_id, latents, name=options.name, description=options.description,
                                overwrite=options.overwrite, source="clone", content_hash=content_hash)
        voice_control.request_evict(get_redis(), info.id)
        return jsonify({"voice": info.to_json(), **summary})
    return jsonify({**latents.to_json(), **summary})


@bp.post("/save_voice/<path:voice_id>", responses={201: VoiceResponse, **ERRORS})
def save_voice(path: VoicePath, body: SaveVoiceBody) -> tuple[Response, int]:
    """Save latents (as /clone_speaker returns them) as a voice; 409 if it exists unless overwrite is true."""
    voice_id = validate_voice_id(path.voice_id)
    latents = parse_latents(body.gpt_cond_latent, body.speaker_embedding, LiveWorkers.now().gpt_width)
    info = store.save_voice(voice_id, latents, name=body.name, description=body.description, overwrite=body.overwrite)
    voice_control.request_evict(get_redis(), voice_id)
    return jsonify(info.to_json()), 201


@bp.get("/saved_voices", responses={200: VoicesPage, 400: ErrorResponse})
def saved_voices(query: VoicesQuery) -> Response:
    """Saved voices, a page at a time, ordered by id."""
    total, voices = store.list_voices(query.page, query.per_page)
    return jsonify({"voices": [v.to_json() for v in voices], "total": total, "page": query.page, "per_page": query.per_page})


@bp.get("/saved_voices/<path:voice_id>", responses={200: VoiceResponse, **ERRORS})
def saved_voice(path: VoicePath, query: VoiceQuery) -> Response:
    """One saved voice; `include_latents=true` adds its latents."""
    info = store.get_voice(path.voice_id)
    body = info.to_json()
    if query.include_latents:
        body.update(store.load_latents(info.id).to_json())
    return jsonify(body)


@bp.delete("/saved_voices/<path:voice_id>", responses={200: {"description": "deleted"}, **ERRORS})
def delete_saved_voice(path: VoicePath) -> Response:
    """Delete a saved voice: no worker synthesizes with it afterwards."""
    store.delete_voice(path.voice_id)
    voice_control.request_evict(get_redis(), path.voice_id)
    return jsonify({"deleted": path.voice_id})
