"""Pronunciation lexicons: a tenant's respellings of names and words (`grapheme -> alias`), applied to the text of
its requests before normalisation, since XTTS reads text (an alias says how: "Nguyen" -> "Win").

An entry matches whole words by default (`whole_word`: not inside a longer word) and ignores case unless it is
`case_sensitive`. All the entries of the lexicons a request uses are compiled into one regular expression shaped as
a trie of their graphemes (a branch per distinct next character), so a text is read once, in time proportional to
its length times the longest grapheme, however many entries there are; the longest grapheme wins where several
match at one place. What the store keeps and the API serves: shared/lexicon_store.py, api/routes/lexicons.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_ENTRIES = 5000  # per lexicon
MAX_LEXICONS_PER_TENANT = 20
MAX_GRAPHEME_CHARS = 100
MAX_ALIAS_CHARS = 500
LEXICON_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
LEXICON_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


@dataclass(frozen=True)
class Entry:
    grapheme: str
    alias: str
    case_sensitive: bool = False
    whole_word: bool = True


@dataclass(frozen=True)
class Lexicon:
    name: str
    language: str | None  # None: every language
    entries: tuple[Entry, ...]
    revision: str = ""  # changes on every write (shared/lexicon_store.py)

    def speaks(self, language: str) -> bool:
        return self.language is None or self.language == language


@dataclass
class Respeller:
    """The entries of some lexicons, compiled: `apply` rewrites a text with their aliases."""

    entries: list[Entry]
    _pattern: re.Pattern[str] | None = field(init=False, default=None)
    _aliases: dict[tuple[bool, bool, str], str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        groups: dict[tuple[bool, bool], list[str]] = {}
        for entry in self.entries:  # the first lexicon named, and its first entry, wins a grapheme given twice
            key = (entry.whole_word, entry.case_sensitive, _key(entry.grapheme, entry.case_sensitive))
            if key not in self._aliases:
                self._aliases[key] = entry.alias
                groups.setdefault(key[:2], []).append(key[2])
        branches = [
            f"(?P<{_group(whole, sensitive)}>{_bounded(_trie(words, sensitive), whole)})"
            for (whole, sensitive), words in sorted(groups.items(), reverse=True)  # whole words first
        ]
        if branches:
            self._pattern = re.compile("|".join(branches))

    def apply(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(self._alias, text)

    def _alias(self, match: re.Match[str]) -> str:
        whole, sensitive = _kind(match.lastgroup or "")
        return self._aliases[(whole, sensitive, _key(match.group(0), sensitive))]


def respeller(lexicons: Iterable[Lexicon], language: str) -> Respeller:
    """The entries of `lexicons` that speak `language`, in the order given."""
    return Respeller([entry for lexicon in lexicons if lexicon.speaks(language) for entry in lexicon.entries])


def _key(grapheme: str, case_sensitive: bool) -> str:
    return grapheme if case_sensitive else grapheme.lower()


def _group(whole: bool, sensitive: bool) -> str:
    return f"{'w' if whole else 'p'}{'s' if sensitive else 'i'}"


def _kind(group: str) -> tuple[bool, bool]:
    return group[0] == "w", group[1] == "s"


def _bounded(pattern: str, whole: bool) -> str:
    return rf"(?<!\w){pattern}(?!\w)" if whole else pattern


def _trie(words: list[str], sensitive: bool) -> str:
    """One pattern matching any of `words` (longest first), branching once per distinct next character."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    body = _branches(root)
    return body if sensitive else f"(?i:{body})"


def _branches(node: dict[str, dict]) -> str:
    """A trie node as a pattern: its children (each a character and what follows), optional where a word ends."""
    children = [re.escape(ch) + _branches(child) for ch, child in sorted(node.items()) if ch]
    if not children:
        return ""
    body = children[0] if len(children) == 1 else "(?:" + "|".join(children) + ")"
    return f"(?:{body})?" if "" in node else body
