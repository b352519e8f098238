"""Splitting a long text into synthesis segments that XTTS can speak well.

Contract (checked by property tests): the segments are contiguous slices of `normalize_text(text)`,
so `"".join(segments) == normalize_text(text)` and nothing is lost or reordered; each segment, without
its trailing space, is at most the language's character limit. Cuts prefer sentence ends, then clause
punctuation, then spaces, and only cut inside a word that alone exceeds the limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.languages import char_limit

_WHITESPACE = re.compile(r"\s+")
# A sentence ends after terminal punctuation (plus closing quotes/brackets) and the space after it;
# CJK terminal punctuation needs no space.
# The lookbehind makes a match start only at the first mark of a run, and the possessive quantifiers (`++`, `*+`)
# never give characters back: without them, a run of N marks not followed by a space was tried from each of its N
# positions, each scanning to the run's end (quadratic: 16 000 dots took 3 s, 100 000 minutes, holding the GIL).
_SENTENCE_END = re.compile(r"""(?:(?<![.!?…])[.!?…]++["'”’»)\]]*+\s)|(?:[。！？；]++["'”’»）」』]*+\s?)""")
# Clause boundaries: Latin punctuation followed by a space, CJK commas with or without one.
_CLAUSE_END = re.compile(r"""(?:[,;:—–]["'”’»)\]]*+\s)|(?:[，、：；]\s?)|(?:\s[—–-]\s)""")
_SPACE = re.compile(r" ")


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space and trim the ends."""
    return _WHITESPACE.sub(" ", text).strip()


def _cuts(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Slice `text` right after every match of `pattern`; the slices join back to `text`."""
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _fits(piece: str, limit: int) -> bool:
    return len(piece.rstrip()) <= limit


def _hard_cut(piece: str, limit: int) -> list[str]:
    """Cut a piece with no usable boundary (a very long word, unspaced CJK) every `limit` chars."""
    return [piece[i : i + limit] for i in range(0, len(piece), limit)]


def _split_piece(piece: str, limit: int, levels: tuple[re.Pattern[str], ...]) -> list[str]:
    """Break one over-long piece at the coarsest boundary kind that exists, recursing for the rest."""
    if _fits(piece, limit):
        return [piece]
    if not levels:
        return _hard_cut(piece, limit)
    parts = _cuts(piece, levels[0])
    if len(parts) == 1:
        return _split_piece(piece, limit, levels[1:])
    return _pack((sub for part in parts for sub in _split_piece(part, limit, levels[1:])), limit)


def _pack(pieces: Iterable[str], limit: int) -> list[str]:
    """Greedily join consecutive pieces while the result stays within the limit."""
    packed: list[str] = []
    for piece in pieces:
        if packed and _fits(packed[-1] + piece, limit):
            packed[-1] += piece
        else:
            packed.append(piece)
    return packed


def split_text(text: str, language: str, limit: int | None = None) -> list[str]:
    """Split `text` into segments within `limit` characters (default: the language's XTTS limit)."""
    normalized = normalize_text(text)
    if not normalized:
        return []
    limit = limit or char_limit(language)
    sentences = _cuts(normalized, _SENTENCE_END)
    levels = (_CLAUSE_END, _SPACE)
    return _pack((sub for sentence in sentences for sub in _split_piece(sentence, limit, levels)), limit)
