"""Pronunciation lexicons: /lexicons."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.common import LANGUAGE_SCHEMA, NO_NUL, as_utc, documented_as, either, not_blank, nullable, words_schema
from shared.lexicons import LEXICON_NAME_PATTERN, MAX_ALIAS_CHARS, MAX_ENTRIES, MAX_GRAPHEME_CHARS, Entry

if TYPE_CHECKING:
    from shared.models import PronunciationLexicon

LEXICON_NAME_SCHEMA = {"type": "string", "pattern": LEXICON_NAME_PATTERN, "minLength": 1, "maxLength": 64}


class LexiconEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grapheme: str = Field(
        ...,
        min_length=1,
        max_length=MAX_GRAPHEME_CHARS,
        pattern=NO_NUL,
        description="The word as written",
        json_schema_extra=documented_as(words_schema(MAX_GRAPHEME_CHARS)),
    )
    alias: str = Field(
        ...,
        min_length=1,
        max_length=MAX_ALIAS_CHARS,
        pattern=NO_NUL,
        description="What is said instead (a respelling)",
        json_schema_extra=documented_as(words_schema(MAX_ALIAS_CHARS)),
    )
    case_sensitive: bool = Field(False, description="Match only with this case (default: any case)")
    whole_word: bool = Field(True, description="Match only as a whole word, not inside a longer one")

    @field_validator("grapheme", "alias")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return not_blank(value, "a grapheme or alias")

    def entry(self) -> Entry:
        return Entry(self.grapheme.strip(), self.alias.strip(), self.case_sensitive, self.whole_word)

    @classmethod
    def of(cls, entry: dict[str, Any]) -> LexiconEntry:
        return cls.model_validate(entry)


def _body_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = [{"language": "en", "entries": [{"grapheme": "Nguyen", "alias": "Win"}]}]
    schema["allOf"] = either("entries", "array", "pls", "string")  # what `_entries_or_pls` checks


class LexiconBody(BaseModel):
    """A lexicon's entries, as JSON or as a W3C PLS document (alias lexemes)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_body_schema)

    language: str | None = Field(
        None,
        description="The language whose text it respells (one of GET /languages); null: every language. A PLS "
        "document's xml:lang is used when this is not given.",
        json_schema_extra=documented_as(nullable(LANGUAGE_SCHEMA)),
    )
    entries: list[LexiconEntry] | None = Field(None, max_length=MAX_ENTRIES)
    pls: str | None = Field(
        None,
        max_length=2_000_000,
        pattern=NO_NUL,
        description="Instead of entries: a PLS 1.0 document; lexemes with phonemes and no alias are refused.",
    )

    @model_validator(mode="after")
    def _entries_or_pls(self) -> LexiconBody:
        if (self.entries is None) == (self.pls is None):
            raise ValueError("give exactly one of entries and pls")
        return self


class LexiconPath(BaseModel):
    name: str = Field(..., description="The lexicon's name", json_schema_extra=documented_as(LEXICON_NAME_SCHEMA))


class LexiconSummary(BaseModel):
    name: str
    language: str | None
    entries: int = Field(..., description="How many entries it has")
    updated: datetime

    _as_utc = field_validator("updated")(as_utc)


class Lexicons(BaseModel):
    lexicons: list[LexiconSummary]


class LexiconResponse(BaseModel):
    name: str
    language: str | None
    entries: list[LexiconEntry]
    created: datetime
    updated: datetime

    _as_utc = field_validator("created", "updated")(as_utc)

    @classmethod
    def of(cls, row: PronunciationLexicon) -> LexiconResponse:
        return cls(
            name=row.name,
            language=row.language,
            entries=[LexiconEntry.of(entry) for entry in row.entries],
            created=row.created_at,
            updated=row.updated_at,
        )


class DeletedLexicon(BaseModel):
    deleted: str
