"""A tenant's pronunciation lexicons in SQL, and the compiled ones a request uses (cached by revision)."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, func, select

from shared.db import rows_changed, session_scope
from shared.errors import FarmError, InvalidInput, NotFound
from shared.lexicons import LEXICON_NAME, MAX_LEXICONS_PER_TENANT, Entry, Lexicon, Respeller, respeller
from shared.models import PronunciationLexicon, utcnow

_COMPILED_CACHE_SIZE = 64


class UnknownLexicon(FarmError):
    status, code = 400, "unknown_lexicon"


class TooManyLexicons(FarmError):
    status, code = 409, "too_many_lexicons"


def _lexicon(row: PronunciationLexicon) -> Lexicon:
    return Lexicon(row.name, row.language, tuple(Entry(**entry) for entry in row.entries), row.revision)


def put(tenant: str, name: str, language: str | None, entries: list[Entry]) -> tuple[PronunciationLexicon, bool]:
    """Creates or replaces the tenant's lexicon; (the row, whether it is new)."""
    now = utcnow()
    with session_scope() as s:
        row = s.get(PronunciationLexicon, (tenant, name))
        created = row is None
        if row is None:
            count = s.execute(select(func.count()).where(PronunciationLexicon.tenant == tenant)).scalar_one()
            if count >= MAX_LEXICONS_PER_TENANT:
                raise TooManyLexicons(
                    f"this tenant has {count} lexicons, the most it may have; delete one or add entries to another",
                    details={"limit": MAX_LEXICONS_PER_TENANT},
                )
            row = PronunciationLexicon(tenant=tenant, name=name, created_at=now)
            s.add(row)
        row.language = language
        row.entries = [asdict(entry) for entry in entries]
        row.revision = uuid.uuid4().hex
        row.updated_at = now
        s.flush()
        s.expunge(row)
        return row, created


def get(tenant: str, name: str) -> PronunciationLexicon:
    with session_scope() as s:
        row = s.get(PronunciationLexicon, (tenant, name))
        if row is None:
            raise NotFound(f"no lexicon {name!r}")
        s.expunge(row)
        return row


def summaries(tenant: str) -> list[dict[str, Any]]:
    with session_scope() as s:
        rows = s.execute(
            select(PronunciationLexicon)
            .where(PronunciationLexicon.tenant == tenant)
            .order_by(PronunciationLexicon.name)
        ).scalars()
        return [
            {"name": r.name, "language": r.language, "entries": len(r.entries), "updated": r.updated_at} for r in rows
        ]


def remove(tenant: str, name: str) -> None:
    with session_scope() as s:
        statement = delete(PronunciationLexicon).where(
            PronunciationLexicon.tenant == tenant, PronunciationLexicon.name == name
        )
        if not rows_changed(s, statement):
            raise NotFound(f"no lexicon {name!r}")


def for_request(tenant: str, names: list[str] | None) -> list[Lexicon]:
    """The lexicons a request uses: those it names, in its order (each must exist), or, naming none, all of the
    tenant's, by name. Only their names and revisions are read on every request; a lexicon's entries only when
    this process has not compiled that revision yet."""
    with session_scope() as s:
        query = select(PronunciationLexicon.name, PronunciationLexicon.revision).where(
            PronunciationLexicon.tenant == tenant
        )
        if names is not None:
            query = query.where(PronunciationLexicon.name.in_(names))
        revisions: dict[str, str] = dict(s.execute(query).tuples().all())
        if names is None:
            names = sorted(revisions)
        missing = [name for name in names if name not in revisions]
        if missing:
            raise UnknownLexicon(
                f"no lexicon {missing[0]!r}; GET /lexicons lists this tenant's", details={"missing": missing}
            )

        def load(name: str) -> Lexicon:
            row = s.get(PronunciationLexicon, (tenant, name))
            assert row is not None  # read in this transaction
            return _lexicon(row)

        return [COMPILED.lexicon((tenant, name, revisions[name]), load) for name in dict.fromkeys(names)]


class _Compiled:
    """Lexicons and their compiled respellers by (tenant, name, revision): a request that uses them compiles them
    once per API process and revision, not once per request."""

    def __init__(self) -> None:
        self._lexicons: OrderedDict[tuple[str, str, str], Lexicon] = OrderedDict()
        self._respellers: OrderedDict[tuple[Any, ...], Respeller] = OrderedDict()
        self._lock = threading.Lock()

    def lexicon(self, key: tuple[str, str, str], load: Callable[[str], Lexicon]) -> Lexicon:
        """The lexicon of (tenant, name, revision), loaded by name when this process has none of that revision."""
        with self._lock:
            found = self._lexicons.get(key)
            if found is not None:
                self._lexicons.move_to_end(key)
                return found
        found = load(key[1])
        with self._lock:
            self._lexicons[key] = found
            _trim(self._lexicons)
        return found

    def respeller(self, lexicons: list[Lexicon], language: str) -> Respeller:
        key = (tuple(lexicon.revision for lexicon in lexicons), language)  # a revision is a fresh uuid
        with self._lock:
            found = self._respellers.get(key)
        if found is None:
            found = respeller(lexicons, language)
            with self._lock:
                self._respellers[key] = found
                _trim(self._respellers)
        return found


def _trim(cache: OrderedDict[Any, Any]) -> None:
    while len(cache) > _COMPILED_CACHE_SIZE:
        cache.popitem(last=False)


COMPILED = _Compiled()


def check_name(name: str) -> str:
    if not LEXICON_NAME.match(name):
        raise InvalidInput(
            f"lexicon name {name[:80]!r} must be 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name
