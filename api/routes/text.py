"""What a text will be said as, before anything is synthesized: POST /v1/text/normalize."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from api.auth import caller
from api.responses import json_model
from api.schemas.common import ErrorResponse
from api.schemas.text import NormalizeRequest, NormalizeResponse, SpokenSegment
from api.submission import LiveWorkers, check_language, spoken_segments
from shared import lexicon_store

bp = APIBlueprint(
    "text", __name__, url_prefix="/v1", abp_tags=[Tag(name="text", description="What a text will be said as")]
)


@bp.post("/text/normalize", responses={200: NormalizeResponse, 400: ErrorResponse, 413: ErrorResponse})
def normalize_text(body: NormalizeRequest) -> Response:
    """Exactly what a synthesis request with this text would have the workers say, segment by segment: numbers,
    amounts, units, dates, times, phone numbers, e-mail addresses and URLs as words, markdown left out (unless
    `normalize` is `off`); SSML's and the pause tags' pauses, languages, voices and speeds; with what could not be
    done as asked in `warnings`. Nothing is synthesized."""
    lexicons = lexicon_store.for_request(caller().tenant, body.lexicons)
    spoken = spoken_segments(body.source, body.language, body.normalize, body.input_format, lexicons)
    farm = LiveWorkers.now()
    for language in sorted(spoken.languages() | {body.language}):
        check_language(farm, language)
    segments = [
        SpokenSegment(
            text=segment.text,
            language=segment.language or body.language,
            voice=segment.voice or body.voice,
            speed=segment.speed,
            pause_ms=segment.pause_ms,
        )
        for segment in spoken.segments
    ]
    used = [lexicon.name for lexicon in lexicons]
    return json_model(NormalizeResponse(segments=segments, warnings=spoken.warnings, lexicons=used))
