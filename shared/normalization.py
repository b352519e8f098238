"""Text normalisation: what is written becomes what is said, before the text is split into segments.

XTTS reads the characters it is given through its own cleaners, which know numbers and a few abbreviations in some
languages and read everything else wrongly or not at all. `normalize` rewrites, in the request's language:
markdown (parsed with markdown-it: markup and fenced code left out), emoji (said by their CLDR name, or dropped),
e-mail addresses and URLs ("name at example dot com"), phone numbers (digit by digit, in their groups), dates and
times of day, amounts of money, numbers with units (CLDR's unit names, with the right plural form), ordinals written
with digits, numbers (num2words), initialisms (spelled) and a few symbols. Each rule runs on the plain text that the
rules before it left; what it writes has no digits or signs for the later ones to read again.

Languages with a table in shared/spoken_words.py get every rule; the others (Arabic, Chinese, Japanese, Korean,
Hindi) get the markdown, emoji and whitespace rules, and XTTS's own cleaners for the rest.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

import emoji as emoji_names
from babel.dates import get_month_names
from babel.numbers import format_decimal, get_currency_name
from babel.units import format_unit
from markdown_it import MarkdownIt
from markdown_it.token import Token
from num2words import CONVERTER_CLASSES, num2words

from shared.spoken_words import (
    CURRENCY_CODES,
    CURRENCY_SIGNS,
    NUMERIC_DATE_ORDER,
    UNITS,
    WORDS,
    Words,
)

EmojiMode = Literal["speak", "drop"]
# A request's `normalize`: auto (the rules here, in the request's language) or off (the text as written).
NormalizeMode = Literal["auto", "off"]


@dataclass
class Normalized:
    """The text to speak, and what normalisation could not do as asked (said to the user, never spoken)."""

    text: str
    warnings: list[str] = field(default_factory=list)


def normalize(text: str, language: str, *, emoji: EmojiMode = "drop") -> Normalized:
    """`text` as it is to be said in `language` (an XTTS language code)."""
    lang = language.split("-", maxsplit=1)[0]
    out = Normalized(text)
    out.text = _plain_text(out.text, out.warnings)
    out.text = _emoji(out.text, lang, emoji, out.warnings)
    words = WORDS.get(lang)
    if words is not None:
        for rule in _RULES:
            out.text = rule(out.text, lang, words)
    out.text = re.sub(r"[ \t]+", " ", out.text)
    out.text = re.sub(r" *\n+ *", "\n", out.text).strip()
    return out


# --- markdown ------------------------------------------------------------------------------------------------------
# Without CommonMark's indented code blocks: plain text indented by four spaces (a poem, a pasted letter) is text to
# read, and code worth leaving out comes fenced.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable("code")
_BLOCK_ENDS = {"paragraph_close", "heading_close", "list_item_close", "blockquote_close"}


def _plain_text(text: str, warnings: list[str]) -> str:
    """The text of a markdown document, without its markup: headings, paragraphs and list items keep their words
    (an ordered item its number), links their text, images their description; fenced code is left out (said aloud,
    it is noise). Plain text comes through unchanged but for whitespace."""
    parts: list[str] = []
    left_out = 0
    for token in _MARKDOWN.parse(text):
        if token.type in ("fence", "code_block"):
            left_out += 1
        elif token.type == "list_item_open" and token.info:
            parts.append(f"{token.info}{token.markup} ")
        elif token.type == "inline":
            parts.append(_inline_text(token.children or []))
        elif token.type == "heading_close":
            parts.append(".\n" if parts and not parts[-1].rstrip().endswith((".", "!", "?", ":")) else "\n")
        elif token.type in _BLOCK_ENDS:
            parts.append("\n")
    if left_out:
        warnings.append(f"{left_out} code block(s) left out: code is not read aloud")
    return "".join(parts)


def _inline_text(children: list[Token]) -> str:
    pieces = []
    for child in children:
        if child.type in ("text", "code_inline"):
            pieces.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            pieces.append(" ")
        elif child.type == "image":
            pieces.append(_inline_text(child.children or []))
    return "".join(pieces)


# --- emoji ---------------------------------------------------------------------------------------------------------
def _emoji(text: str, lang: str, mode: EmojiMode, warnings: list[str]) -> str:
    if not emoji_names.emoji_count(text):
        return text
    if mode == "speak" and lang not in emoji_names.LANGUAGES:
        warnings.append(f"emoji dropped: no emoji names in language {lang!r}")
        mode = "drop"
    if mode == "drop":
        return emoji_names.replace_emoji(text, replace="")

    def name(chars: str, data: dict[str, str]) -> str:
        said = emoji_names.demojize(chars, language=lang, delimiters=("", ""))
        return f" {said.replace('_', ' ')} "

    return emoji_names.replace_emoji(text, replace=name)


# --- numbers -------------------------------------------------------------------------------------------------------
# num2words reads numbers below about 10**15 in every language here; longer runs of digits (an account number, a
# hostile input) are read one digit at a time, as people read them.
_MAX_DIGITS = 15
_NUM2WORDS_FAILURES = (ArithmeticError, LookupError, ValueError, TypeError, NotImplementedError)


def say_number(value: Decimal | int, lang: str, to: str = "cardinal") -> str:
    """`value` in words: num2words in the language, the language's own reading of decimals where num2words' is
    wrong (Italian drops the decimals, Spanish says "punto", Turkish reads 1,5 as "bir virgül elli"), and digit by
    digit where num2words cannot read it."""
    words = WORDS[lang]
    if value < 0:
        return f"{words.minus} {say_number(-value, lang, to)}"
    written = str(value) if isinstance(value, int) else format(value, "f")
    whole, _, fraction = written.partition(".")
    if len(whole) > _MAX_DIGITS or len(fraction) > _MAX_DIGITS:
        return _say_digits(written, words, lang)
    if not fraction.strip("0"):
        value, fraction = int(whole), ""
    if fraction and words.own_decimals:
        zeros = len(fraction) - len(fraction.lstrip("0"))
        said = [say_number(0, lang)] * zeros + [say_number(int(fraction), lang)]
        return f"{say_number(int(whole), lang)} {words.point} {' '.join(said)}"
    try:
        return str(num2words(value, lang=lang, to=to))
    except _NUM2WORDS_FAILURES:
        return _say_digits(written, words, lang)


def _say_digits(written: str, words: Words, lang: str) -> str:
    return " ".join(words.point if ch == "." else str(num2words(int(ch), lang=lang)) for ch in written)


def _decimal_mark(lang: str) -> str:
    return "." if lang == "en" else ","


def _number_pattern(lang: str) -> str:
    """A written number of the language: digits with its thousands groups and its decimal mark."""
    group = "," if lang == "en" else r"[.\u00a0\u202f ]"
    mark = re.escape(_decimal_mark(lang))
    return rf"(?<![\w.,])-?\d{{1,3}}(?:{group}\d{{3}})+(?:{mark}\d+)?(?![\d])|(?<![\w.,])-?\d+(?:{mark}\d+)?(?!\d)"


def _parse_number(written: str, lang: str) -> Decimal | None:
    mark = _decimal_mark(lang)
    digits = re.sub(r"[,.\u00a0\u202f ]", lambda m: "." if m.group() == mark else "", written)
    try:
        return Decimal(digits)
    except InvalidOperation:
        return None


def _numbers(text: str, lang: str, words: Words) -> str:
    def say(match: re.Match[str]) -> str:
        value = _parse_number(match.group(), lang)
        return match.group() if value is None else say_number(value, lang)

    text = re.sub(r"(?<=\d)[-–](?=\d)", " – ", text)  # a range ("1990-2000"): two numbers, not one word
    return re.sub(_number_pattern(lang), say, text)


# --- addresses -----------------------------------------------------------------------------------------------------
# Addresses are whole words: each run of non-blanks is checked against these (fullmatch), never a pattern searched
# through the text, which would rescan a long run from each of its characters.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>\"']+"
    r"|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|dev|edu|gov|de|fr|es|it|pt|pl|nl|ru|tr|cz|hu|uk|eu)(?:/\S*)?",
    re.IGNORECASE,
)
_OPENING = "([{\"'<«„“"
_CLOSING = ")]}\"'>».,;:!?»“”"


def _say_address(address: str, lang: str, words: Words) -> str:
    """Letters and digits as they are (digits one by one), signs as words: "docs dot example dot com slash api"."""
    signs = {".": words.dot, "/": words.slash, "-": words.dash, "_": words.underscore, "@": words.at, "+": words.plus}
    said = []
    for piece in re.findall(r"[^\W_]+|[./\-_@+]", address):
        if piece in signs:
            said.append(signs[piece])
        elif piece.isdigit():
            said.extend(say_number(int(d), lang) for d in piece)
        else:
            said.append(piece)
    return " ".join(said)


def _addresses(text: str, lang: str, words: Words) -> str:
    """E-mail addresses and URLs, said without their scheme and "www": "docs dot example dot com slash api"."""

    def say(match: re.Match[str]) -> str:
        word = match.group()
        core = word.lstrip(_OPENING)
        before = word[: len(word) - len(core)]
        core = core.rstrip(_CLOSING)
        after = word[len(before) + len(core) :]
        if _EMAIL.fullmatch(core):
            return before + _say_address(core, lang, words) + after
        if _URL.fullmatch(core):
            address = re.sub(r"^(?:https?://)?(?:www\.)?", "", core, flags=re.IGNORECASE).rstrip("/")
            return before + _say_address(address, lang, words) + after
        return word

    return re.sub(r"\S+", say, text)


# --- phone numbers -------------------------------------------------------------------------------------------------
# A country code (+) or an area code in brackets, then groups of digits split by spaces, dashes or dots; or, without
# either, three or more groups split by dashes ("555-123-4567": spaces and dots also group thousands). At least 7
# digits in all.
_PHONE = re.compile(
    r"(?<![\w.,+-])(?:(?:\+\d{1,3}|\(\d{1,5}\))(?:[ .-]?\d{1,8}){1,6}|\d{2,5}(?:-\d{2,8}){2,5})(?![\w,-])"
)


def _phones(text: str, lang: str, words: Words) -> str:
    def say(match: re.Match[str]) -> str:
        groups = re.findall(r"\+|\d+", match.group())
        if sum(len(g) for g in groups if g.isdigit()) < 7:
            return match.group()
        said = [words.plus if g == "+" else " ".join(say_number(int(d), lang) for d in g) for g in groups]
        if said[0] == words.plus:
            said[:2] = [f"{said[0]} {said[1]}"]
        return ", ".join(said)

    return _PHONE.sub(say, text)


# --- dates and times -----------------------------------------------------------------------------------------------
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_NUMERIC_DATE = re.compile(r"\b(\d{1,4})([./-])(\d{1,2})\2(\d{1,4})\b\.?")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?\b(?:\s?(a\.?m\.?|p\.?m\.?)(?!\w))?", re.IGNORECASE)


def _say_date(day: int, month: int, year: int, lang: str, words: Words) -> str | None:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return None  # not a date: left to the number rules
    if day == 1 and words.first_day:
        day_said = words.first_day
    else:
        day_said = say_number(day, lang, "ordinal" if words.day_ordinal else "cardinal")
        day_said = " ".join(_with_ending(word, words.day_endings) for word in day_said.split())
    month_said = get_month_names("wide", context="format", locale=lang)[month]
    year_said = say_number(year, lang, "year")
    return words.date.format(day=day_said, month=month_said, year=year_said)


def _with_ending(word: str, endings: tuple[tuple[str, str], ...]) -> str:
    for old, new in endings:
        if word.endswith(old):
            return word[: -len(old)] + new
    return word


def _dates(text: str, lang: str, words: Words) -> str:
    def iso(match: re.Match[str]) -> str:
        year, month, day = (int(g) for g in match.groups())
        return _say_date(day, month, year, lang, words) or match.group()

    def numeric(match: re.Match[str]) -> str:
        first, _, second, third = match.groups()
        fields = dict(zip(NUMERIC_DATE_ORDER[lang], (first, second, third), strict=True))
        if len(fields["y"]) != 4:
            return match.group()
        return _say_date(int(fields["d"]), int(fields["m"]), int(fields["y"]), lang, words) or match.group()

    return _NUMERIC_DATE.sub(numeric, _ISO_DATE.sub(iso, text))


_NEXT_SENTENCE = re.compile(r"\s*(?:$|\n|[A-Z])")


def _say_time(hour: int, minute: int, meridiem: str | None, lang: str, words: Words) -> str:
    if meridiem:
        hour = hour % 12 or 12
    hour_said = say_number(hour, lang)
    suffix = f" {' '.join(ch for ch in meridiem.lower() if ch.isalpha())}" if meridiem else ""
    if minute == 0 and words.full_hour:
        return words.full_hour.format(hour=hour_said) + suffix
    minute_said = say_number(minute, lang)
    if minute < 10 and words.minute_zero:
        minute_said = f"{words.minute_zero} {minute_said}"
    pattern = words.time
    pattern = re.sub(r"\[(.*?)\]", "" if minute == 0 else r"\1", pattern)
    return pattern.format(hour=hour_said, minute=minute_said) + suffix


def _times(text: str, lang: str, words: Words) -> str:
    def say(match: re.Match[str]) -> str:
        said = _say_time(int(match.group(1)), int(match.group(2)), match.group(3), lang, words)
        # "at 9 p.m." at a sentence's end: its last dot ends the sentence too (the splitter cuts there).
        ends_sentence = _NEXT_SENTENCE.match(text, match.end())
        return said + "." if match.group().endswith(".") and ends_sentence else said

    return _TIME.sub(say, text)


# --- money and units -----------------------------------------------------------------------------------------------
def _say_money(amount: Decimal, code: str, lang: str, words: Words) -> str:
    """The amount in the currency's words: num2words' forms of its main and fractional unit where it has them (with
    the language's plural rules), else CLDR's name of the currency after the number."""
    converter = CONVERTER_CLASSES[lang]
    forms = getattr(converter, "CURRENCY_FORMS", {}).get(code)
    whole = int(abs(amount))
    cents = int((abs(amount) - whole) * 100)
    sign = f"{words.minus} " if amount < 0 else ""
    # num2words' Turkish has no working currency words and its Hungarian says "cents": CLDR's names there.
    if forms is None or lang in ("tr", "hu") or whole >= 10**_MAX_DIGITS:
        name = get_currency_name(code, count=whole if not cents else 2, locale=lang)
        return f"{sign}{say_number(abs(amount), lang)} {name}"
    said = f"{sign}{say_number(whole, lang)} {converter.pluralize(whole, forms[0])}"
    if cents:
        said += f" {words.and_} {say_number(cents, lang)} {converter.pluralize(cents, forms[1])}"
    return said


def _money(text: str, lang: str, words: Words) -> str:
    number = _number_pattern(lang)
    signs = "|".join(re.escape(sign) for sign in CURRENCY_SIGNS)
    codes = "|".join(CURRENCY_CODES)

    def say(match: re.Match[str]) -> str:
        written = match.group("a1") or match.group("a2")
        currency = match.group("c1") or match.group("c2")
        amount = _parse_number(written, lang)
        if amount is None:
            return match.group()
        return _say_money(amount, CURRENCY_SIGNS.get(currency, currency), lang, words)

    currency = rf"{signs}|\b(?:{codes})\b"
    pattern = rf"(?:(?P<c1>{currency})\s?(?P<a1>{number}))|(?:(?P<a2>{number})\s?(?P<c2>{currency}))"
    return re.sub(pattern, say, text)


def _say_unit(written: str, unit: str, lang: str) -> str | None:
    """The amount with CLDR's long name of the unit, in the plural form the amount takes ("2 procenta", "5 procent")."""
    amount = _parse_number(written, lang)
    if amount is None or abs(amount) >= 10**_MAX_DIGITS:
        return None  # CLDR's formats stop there too: the number rule reads its digits, the unit stays as written
    count = int(amount) if amount == amount.to_integral_value() else float(amount)
    phrase = format_unit(count, UNITS[unit], length="long", locale=lang)
    phrase = phrase.replace(_cldr_number(count, lang), say_number(amount, lang), 1).replace("/", " ")
    return re.sub(r"[\u00a0\u202f]", " ", phrase)  # CLDR's no-break spaces


def _units(text: str, lang: str, words: Words) -> str:
    number = _number_pattern(lang)
    units = "|".join(re.escape(unit) for unit in sorted(UNITS, key=len, reverse=True))
    said = re.sub(
        rf"(?P<n>{number})\s?(?P<u>{units})(?![\w/])",
        lambda m: _say_unit(m.group("n"), m.group("u"), lang) or m.group(),
        text,
    )
    if lang == "tr":  # Turkish writes the percent sign first: "%20" is "yüzde yirmi"
        said = re.sub(rf"%\s?(?P<n>{number})", lambda m: _say_unit(m.group("n"), "%", lang) or m.group(), said)
    return said


def _cldr_number(count: int | float, lang: str) -> str:
    """The number as CLDR wrote it into a unit's phrase (format_unit's default pattern)."""
    return format_decimal(count, locale=lang)


# --- ordinals, initialisms, symbols --------------------------------------------------------------------------------
def _ordinals(text: str, lang: str, words: Words) -> str:
    if not words.ordinal_suffixes:
        return text
    suffixes = "|".join(re.escape(s) for s in sorted(words.ordinal_suffixes, key=len, reverse=True))
    return re.sub(rf"\b(\d+)(?:{suffixes})(?!\w)", lambda m: say_number(int(m.group(1)), lang, "ordinal"), text)


_VOWELS = set("AEIOUY")


def _initialisms(text: str, lang: str, words: Words) -> str:
    """A word of two to five capitals is spelled when it has no vowel or at most three letters ("FBI", "HTML"); a
    longer one with vowels is read as a word ("NASA")."""

    def say(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) <= 3 or not _VOWELS & set(word):
            return " ".join(word)
        return word

    return re.sub(r"\b[A-Z]{2,5}\b", say, text)


def _symbols(text: str, lang: str, words: Words) -> str:
    said = {"&": words.and_, "+": words.plus, "@": words.at}
    return re.sub(r"(?<=\s)[&+@](?=\s)", lambda m: said[m.group()], text)


_RULES: tuple[Callable[[str, str, Words], str], ...] = (
    _addresses,
    _dates,
    _times,
    _phones,
    _money,
    _units,
    _ordinals,
    _numbers,
    _initialisms,
    _symbols,
)
