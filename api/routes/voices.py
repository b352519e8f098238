"""Voices: cloning on the workers (/clone_speaker), saved voices any worker can use."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ValidationError

from api.auth import caller
from api.errors import CloneFailed, CloneTimeout, invalid_input_from
from api.responses import json_model
from api.schemas.common import ErrorResponse
from api.schemas.voices import (
    AliasBody,
    Aliases,
    AliasPath,
    AliasResponse,
    ClonedLatents,
    ClonedVoice,
    CloneForm,
    CloneOptions,
    CloneResponse,
    DeletedAlias,
    DeletedVoice,
    SaveBlendBody,
    SavedVoice,
    SaveVoiceBody,
    VoicePath,
    VoiceQuery,
    VoiceResponse,
    VoicesPage,
    VoicesQuery,
    VoiceWithLatents,
)
from api.submission import LiveWorkers, voice_by_name
from shared import alias_store, blends, voice_control
from shared.errors import InvalidInput, NoWorkers
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.tasks import BLEND_VOICE, CLONE_VOICE
from voices_store import staging, store
from voices_store.errors import TooMuchReferenceAudio, VoiceExists
from voices_store.ids import validate_voice_id, voice_key
from voices_store.latents import Latents, parse_latents
from voices_store.uploads import Reference, decode_references, references_hash

log = logging.getLogger(__name__)
bp = APIBlueprint("voices", __name__, abp_tags=[Tag(name="voices", description="Voice cloning and saved voices")])

Responses = dict[int | str, type[BaseModel] | dict[str, Any] | None]
NOT_FOUND: Responses = {400: ErrorResponse, 404: ErrorResponse}


def _options(raw: dict[str, Any] | str | None) -> CloneOptions:
    if not raw:
        return CloneOptions()
    try:
        return CloneOptions.model_validate(raw) if isinstance(raw, dict) else CloneOptions.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidInput(f"options is not valid JSON: {str(raw)[:80]!r}") from exc
        raise invalid_input_from(exc, prefix="options") from exc


def _clone(references: list[Reference], tenant: str) -> tuple[str, Latents, bool]:
    """(content hash, latents, reused): the stored result for this audio, or a worker's new one."""
    model = LiveWorkers.now().model_name
    if model is None:
        raise NoWorkers("no synthesis worker is running to clone the voice; start a worker and retry")
    content_hash = references_hash(references, model, tenant)
    stored = store.get_clone_result(content_hash)
    if stored is not None:
        return content_hash, stored, True
    settings, r = get_settings(), get_redis()
    staging.stage(r, content_hash, [ref.samples for ref in references], ttl=settings.CLONE_TIMEOUT_SECONDS + 300)
    result = current_app.extensions["celery"].send_task(CLONE_VOICE, kwargs={"content_hash": content_hash})
    try:
        result.get(timeout=settings.CLONE_TIMEOUT_SECONDS, propagate=True)
    except CeleryTimeout as exc:
        # Stop listening for it: the result consumer would otherwise hold this result (and its pub/sub channel) for
        # the life of the process. The worker still stores a late clone in SQL, where the next request finds it.
        result.forget()
        raise CloneTimeout(
            f"no worker finished cloning within CLONE_TIMEOUT_SECONDS={settings.CLONE_TIMEOUT_SECONDS}; "
            "the farm is busy, retry later (a late result is kept and reused)"
        ) from exc
    except Exception as exc:
        staging.discard(r, content_hash)
        raise CloneFailed(f"the worker could not clone this voice: {type(exc).__name__}: {exc}") from exc
    staging.discard(r, content_hash)
    stored = store.get_clone_result(content_hash)
    if stored is None:
        raise CloneFailed("the worker reported success but stored no result")
    return content_hash, stored, False


@bp.post(
    "/clone_speaker",
    responses={
        200: CloneResponse,
        400: ErrorResponse,
        409: ErrorResponse,
        413: ErrorResponse,
        502: ErrorResponse,
        503: ErrorResponse,
        504: ErrorResponse,
    },
)
def clone_speaker(form: CloneForm) -> Response:
    """Clone a voice from one or more recordings; a worker runs the model, the API waits a bounded time.

    `options` (JSON): `response_format` `json` returns `gpt_cond_latent` [32, width] and `speaker_embedding`
    [512]; `save` stores them as the voice `save_id` (with `name`, `description`; `overwrite` to replace).
    Cloning the same audio again reuses the stored result instead of running the model.
    """
    tenant = caller().tenant
    options = _options(form.options)
    if options.response_format == "save" and options.save_id:
        validate_voice_id(options.save_id)
        if not options.overwrite and store.voice_exists(tenant, options.save_id):
            raise VoiceExists(f"voice {options.save_id!r} already exists; send overwrite=true to replace it")
    settings = get_settings()
    files = [f for f in form.wav_file if f is not None]
    if not files:
        raise InvalidInput("no reference audio: send one or more files in the wav_file field")
    if len(files) > settings.MAX_REFERENCE_PARTS:  # refused before reading any (decode_references cannot count ahead)
        raise TooMuchReferenceAudio(
            f"too many reference files: {len(files)}; at most {settings.MAX_REFERENCE_PARTS} per request"
        )
    # Each part is read only when its turn comes, and decoding stops at the first part over a cap.
    references = decode_references(
        ((f.filename or f"file {i + 1}", f.read()) for i, f in enumerate(files)),
        max_bytes=settings.MAX_UPLOAD_MB * 2**20,
        max_seconds_each=settings.MAX_REFERENCE_SECONDS,
        max_parts=settings.MAX_REFERENCE_PARTS,
        max_total_seconds=settings.MAX_REFERENCE_TOTAL_SECONDS,
    )
    content_hash, latents, reused = _clone(references, tenant)
    seconds = round(sum(ref.seconds for ref in references), 3)
    if options.response_format == "save" and options.save_id:
        info = store.save_voice(
            tenant,
            options.save_id,
            latents,
            name=options.name,
            description=options.description,
            overwrite=options.overwrite,
            source="clone",
            content_hash=content_hash,
        )
        voice_control.request_evict(get_redis(), voice_key(tenant, info.id))
        return json_model(
            ClonedVoice(
                voice=VoiceResponse.from_info(info), content_hash=content_hash, reused=reused, reference_seconds=seconds
            )
        )
    return json_model(
        ClonedLatents(**latents.to_json(), content_hash=content_hash, reused=reused, reference_seconds=seconds)
    )


@bp.post("/save_voice/<path:voice_id>", responses={201: VoiceResponse, 400: ErrorResponse, 409: ErrorResponse})
def save_voice(path: VoicePath, body: SaveVoiceBody) -> Response:
    """Save latents (as /clone_speaker returns them) as a voice; 409 if it exists unless overwrite is true."""
    tenant = caller().tenant
    voice_id = validate_voice_id(path.voice_id)
    latents = parse_latents(body.gpt_cond_latent, body.speaker_embedding, LiveWorkers.now().gpt_width)
    info = store.save_voice(
        tenant, voice_id, latents, name=body.name, description=body.description, overwrite=body.overwrite
    )
    voice_control.request_evict(get_redis(), voice_key(tenant, voice_id))
    return json_model(VoiceResponse.from_info(info), 201)


@bp.post(
    "/save_blend/<path:voice_id>",
    responses={
        201: VoiceResponse,
        400: ErrorResponse,
        409: ErrorResponse,
        502: ErrorResponse,
        503: ErrorResponse,
        504: ErrorResponse,
    },
)
def save_blend(path: VoicePath, body: SaveBlendBody) -> Response:
    """Save a blend of 2 to 4 voices (`voice:weight+...`: saved voices, built-in speakers or aliases) as a voice of
    its own, with its recipe: a worker mixes their latents by weight (the weights scaled to sum to 1)."""
    tenant = caller().tenant
    voice_id = validate_voice_id(path.voice_id)
    if not blends.is_blend(body.blend):
        raise blends.InvalidBlend(f"blend {body.blend[:80]!r} is one voice; write voice:weight+voice:weight")
    choice = voice_by_name(LiveWorkers.now(), body.blend, tenant)
    if not body.overwrite and store.voice_exists(tenant, voice_id):
        raise VoiceExists(f"voice {voice_id!r} already exists; send overwrite=true to replace it")
    recipe = blends.written(blends.parse_blend(body.blend))
    task: dict[str, Any] = {"tenant": tenant, "voice_id": voice_id, "ref": choice.ref, "recipe": recipe}
    task |= {"name": body.name, "description": body.description, "overwrite": body.overwrite}
    result = current_app.extensions["celery"].send_task(BLEND_VOICE, kwargs=task)
    timeout = get_settings().CLONE_TIMEOUT_SECONDS
    try:
        result.get(timeout=timeout, propagate=True)
    except CeleryTimeout as exc:
        result.forget()
        raise CloneTimeout(f"no worker mixed the blend within CLONE_TIMEOUT_SECONDS={timeout}; retry later") from exc
    except Exception as exc:
        raise CloneFailed(f"the worker could not mix this blend: {type(exc).__name__}: {exc}") from exc
    voice_control.request_evict(get_redis(), voice_key(tenant, voice_id))
    return json_model(VoiceResponse.from_info(store.get_voice(tenant, voice_id)), 201)


@bp.get("/saved_voices", responses={200: VoicesPage, 400: ErrorResponse})
def saved_voices(query: VoicesQuery) -> Response:
    """Saved voices, a page at a time, ordered by id."""
    total, voices = store.list_voices(caller().tenant, query.page, query.per_page)
    return json_model(
        VoicesPage(
            voices=[VoiceResponse.from_info(v) for v in voices], total=total, page=query.page, per_page=query.per_page
        )
    )


@bp.get("/saved_voices/<path:voice_id>", responses={200: SavedVoice, **NOT_FOUND})
def saved_voice(path: VoicePath, query: VoiceQuery) -> Response:
    """One saved voice; `include_latents=true` adds its latents."""
    tenant = caller().tenant
    voice = VoiceResponse.from_info(store.get_voice(tenant, path.voice_id))
    if query.include_latents:
        latents = store.load_latents(voice_key(tenant, voice.id))
        return json_model(VoiceWithLatents(**voice.model_dump(), **latents.to_json()))
    return json_model(voice)


@bp.delete("/saved_voices/<path:voice_id>", responses={200: DeletedVoice, **NOT_FOUND})
def delete_saved_voice(path: VoicePath) -> Response:
    """Delete a saved voice: no worker synthesizes with it afterwards."""
    tenant = caller().tenant
    store.delete_voice(tenant, path.voice_id)
    voice_control.request_evict(get_redis(), voice_key(tenant, path.voice_id))
    return json_model(DeletedVoice(deleted=path.voice_id))


@bp.get("/voice_aliases", responses={200: Aliases})
def list_aliases() -> Response:
    """This tenant's voice aliases, by name (OpenAI's voice names are aliases too: GET /v1/audio/voices lists all)."""
    return json_model(Aliases(aliases=[AliasResponse.of(row) for row in alias_store.all_of(caller().tenant)]))


@bp.put(
    "/voice_aliases/<name>",
    responses={200: AliasResponse, 201: AliasResponse, 400: ErrorResponse, 409: ErrorResponse, 503: ErrorResponse},
)
def put_alias(path: AliasPath, body: AliasBody) -> Response:
    """Make `name` stand for a voice in this tenant's requests (201 when new, 200 when it changed). The voice must
    exist now; a saved voice or built-in speaker of the same name still comes first."""
    tenant = caller().tenant
    name = alias_store.check_name(path.name)
    voice_by_name(LiveWorkers.now(), body.voice, tenant, aliases=False)
    row, created = alias_store.put(tenant, name, body.voice)
    return json_model(AliasResponse.of(row), 201 if created else 200)


@bp.delete("/voice_aliases/<name>", responses={200: DeletedAlias, 400: ErrorResponse, 404: ErrorResponse})
def delete_alias(path: AliasPath) -> Response:
    """Delete an alias: the name means what it meant without it (an OpenAI voice name its default speaker)."""
    alias_store.remove(caller().tenant, alias_store.check_name(path.name))
    return json_model(DeletedAlias(deleted=path.name))
