"""Pronunciation lexicons (/lexicons): a tenant's respellings, applied to its requests' text before normalisation
(shared/lexicons.py); kept as JSON entries, imported and exported as W3C PLS documents."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from api.auth import caller
from api.responses import json_model
from api.schemas.common import ErrorResponse
from api.schemas.lexicons import DeletedLexicon, LexiconBody, LexiconPath, LexiconResponse, Lexicons, LexiconSummary
from api.submission import LiveWorkers, check_language
from shared import lexicon_store
from shared.languages import xtts_language
from shared.lexicons import Entry
from shared.pls import InvalidLexicon, read_pls, write_pls

bp = APIBlueprint(
    "lexicons", __name__, abp_tags=[Tag(name="lexicons", description="Pronunciation lexicons (respellings)")]
)

PLS_MEDIA_TYPE = "application/pls+xml"
PLS_DOCUMENT = {"description": "A PLS 1.0 document", "content": {PLS_MEDIA_TYPE: {"schema": {"type": "string"}}}}


@bp.get("/lexicons", responses={200: Lexicons})
def list_lexicons() -> Response:
    """This tenant's lexicons, by name."""
    summaries = [LexiconSummary(**summary) for summary in lexicon_store.summaries(caller().tenant)]
    return json_model(Lexicons(lexicons=summaries))


@bp.put(
    "/lexicons/<name>",
    responses={200: LexiconResponse, 201: LexiconResponse, 400: ErrorResponse, 409: ErrorResponse},
)
def put_lexicon(path: LexiconPath, body: LexiconBody) -> Response:
    """Create or replace a lexicon from entries or a PLS document: 201 when new, 200 when replaced."""
    name = lexicon_store.check_name(path.name)
    language = body.language
    if body.pls is not None:
        pls_language, entries = read_pls(body.pls)
        if language is None and pls_language is not None and pls_language.lower() != "und":
            language = xtts_language(pls_language)
            if language is None:
                raise InvalidLexicon(f"the PLS document's xml:lang={pls_language[:40]!r} is not a language tag")
    else:
        entries = [entry.entry() for entry in body.entries or []]
    if language is not None:
        check_language(LiveWorkers.now(), language)
    row, created = lexicon_store.put(caller().tenant, name, language, entries)
    return json_model(LexiconResponse.of(row), 201 if created else 200)


@bp.get("/lexicons/<name>", responses={200: LexiconResponse, 400: ErrorResponse, 404: ErrorResponse})
def get_lexicon(path: LexiconPath) -> Response:
    """One lexicon, with its entries."""
    return json_model(LexiconResponse.of(lexicon_store.get(caller().tenant, lexicon_store.check_name(path.name))))


@bp.get(
    "/lexicons/<name>/pls",
    responses={200: PLS_DOCUMENT, 400: ErrorResponse, 404: ErrorResponse},
)
def export_lexicon(path: LexiconPath) -> Response:
    """One lexicon as a W3C PLS 1.0 document (alias lexemes)."""
    row = lexicon_store.get(caller().tenant, lexicon_store.check_name(path.name))
    entries = [Entry(**entry) for entry in row.entries]
    return Response(write_pls(row.language, entries), mimetype=PLS_MEDIA_TYPE)


@bp.delete("/lexicons/<name>", responses={200: DeletedLexicon, 400: ErrorResponse, 404: ErrorResponse})
def delete_lexicon(path: LexiconPath) -> Response:
    """Delete a lexicon: requests made afterwards are not respelled by it."""
    lexicon_store.remove(caller().tenant, lexicon_store.check_name(path.name))
    return json_model(DeletedLexicon(deleted=path.name))
