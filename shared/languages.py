"""Languages XTTS-v2 speaks, and the per-language character limits of one synthesis segment.

The limits are the ones XTTS's own tokenizer warns about (`VoiceBpeTokenizer.char_limits`): past them
the model's audio degrades and a segment may hit the 402 text-token cap.
"""

from __future__ import annotations

import re

XTTS_V2_LANGUAGES: tuple[str, ...] = (
    "en",
    "es",
    "fr",
    "de",
    "it",
    "pt",
    "pl",
    "tr",
    "ru",
    "nl",
    "cs",
    "ar",
    "zh-cn",
    "hu",
    "ko",
    "ja",
    "hi",
)

CHAR_LIMITS: dict[str, int] = {
    "en": 250,
    "de": 253,
    "fr": 273,
    "es": 239,
    "it": 213,
    "pt": 203,
    "pl": 224,
    "zh": 82,
    "ar": 166,
    "cs": 186,
    "ru": 182,
    "nl": 251,
    "tr": 226,
    "ja": 71,
    "hu": 224,
    "ko": 95,
    "hi": 150,
}
DEFAULT_CHAR_LIMIT = 250


def base_language(language: str) -> str:
    """`zh-cn` -> `zh`: XTTS keys its limits by the part before the country code."""
    return language.split("-", maxsplit=1)[0].lower()


def char_limit(language: str) -> int:
    return CHAR_LIMITS.get(base_language(language), DEFAULT_CHAR_LIMIT)


_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")


def xtts_language(tag: str) -> str | None:
    """A language tag (SSML's or PLS's xml:lang) as an XTTS language code: de-DE is de, any Chinese is zh-cn; None
    if it is not a language tag. (Whether the farm speaks it is for the API to check.)"""
    code = tag.strip().lower()
    if not _LANGUAGE_TAG.fullmatch(code):
        return None
    primary = code.split("-", maxsplit=1)[0]
    return "zh-cn" if primary == "zh" else primary
