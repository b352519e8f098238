"""The SSML the farm speaks, and the plain-text pause tag: what a request says, as spans of text and pauses.

Apps written for hosted TTS services send SSML; the farm reads this subset of it (W3C SSML 1.1, the tags those
services share) and never reads markup aloud:

- `<speak xml:lang>` (the root), `<p>` and `<s>` (their text, one after another);
- `<break time="700ms"|"1.5s" strength="none|x-weak|weak|medium|strong|x-strong">`: that much silence in the audio
  (at most MAX_BREAK_MS; a strength is Azure's length for it);
- `<say-as interpret-as="characters|spell-out|cardinal|ordinal|digits|date|time|telephone">`;
- `<sub alias>` (the alias is said), `<lang xml:lang>` (the span in that language), `<voice name>` (the span in that
  voice), `<prosody rate>` (XTTS's speed: x-slow ... x-fast, a percentage, or a factor);
- `<emphasis>`: accepted, said plainly (XTTS has no control for it).
Any other tag (`<audio>`, `<mark>`, `<phoneme>`, one of a vendor's own) is left out with a warning and its text is
said: an `<audio>` is never fetched.

The document is read by shared/xml_documents.py: expat through defusedxml with DTDs forbidden (no entity is ever
declared, so none is expanded or fetched), nesting past its MAX_DEPTH refused as it is read, every refusal naming its
line.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Literal

from shared.errors import InvalidInput
from shared.languages import xtts_language
from shared.normalization import say_number
from shared.params import SPEED_RANGE
from shared.spoken_words import WORDS
from shared.xml_documents import line_of, local_name, parse_xml

# A request's `input_format`: plain text (markdown, `[pause:...]` tags) or SSML; not given: SSML if it starts so.
InputFormat = Literal["text", "ssml"]
MAX_BREAK_MS = 10_000
# At most this many pauses in one request (breaks and pause tags): each is a segment of its own.
MAX_PAUSES = 500
# Azure's lengths for SSML's break strengths (SSML itself leaves them to the processor).
BREAK_STRENGTHS_MS = {"none": 0, "x-weak": 250, "weak": 500, "medium": 750, "strong": 1000, "x-strong": 1250}
RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
MIN_RATE, MAX_RATE = SPEED_RANGE
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_DURATION = re.compile(r"\s*(\d{1,6}(?:\.\d{1,3})?)\s*(ms|s)\s*")
# `[pause:0.5s]`, `[pause:700ms]` in plain text (not markup: a token of its own that no text contains by chance).
PAUSE_TAG = re.compile(r"\[pause:\s*(\d{1,6}(?:\.\d{1,3})?)\s*(ms|s)\s*\]", re.IGNORECASE)
_SAY_AS = ("characters", "spell-out", "cardinal", "number", "ordinal", "digits", "date", "time", "telephone")


class InvalidSsml(InvalidInput):
    """SSML that is not well-formed, declares entities, nests too deep or gives a tag a value it cannot take."""

    code = "invalid_ssml"


@dataclass(frozen=True)
class Voicing:
    """How a span is said, where it differs from the request: None keeps the request's."""

    language: str | None = None
    voice: str | None = None
    speed: float | None = None  # a factor on the request's speed


@dataclass(frozen=True)
class Span:
    """Text to say, or (`pause_ms` > 0, no text) silence. `verbatim`: already words (say-as, sub), not normalised."""

    text: str = ""
    pause_ms: int = 0
    voicing: Voicing = Voicing()
    verbatim: bool = False


@dataclass
class Parsed:
    spans: list[Span]
    warnings: list[str]


def looks_like_ssml(text: str) -> bool:
    """What an SSML document starts with: `<speak` (or an XML declaration)."""
    head = text.lstrip()[:64]
    return head.startswith(("<speak", "<?xml"))


def plain_text_spans(text: str) -> Parsed:
    """Plain text with its `[pause:...]` tags as pauses."""
    spans: list[Span] = []
    start = 0
    for match in PAUSE_TAG.finditer(text):
        spans += [Span(text[start : match.start()]), Span(pause_ms=_pause_ms(match, "[pause]", None))]
        start = match.end()
    spans.append(Span(text[start:]))
    check_pauses(spans)
    return Parsed([s for s in spans if s.text or s.pause_ms], [])


def parse(document: str, language: str) -> Parsed:
    """The spans of an SSML document, in order; InvalidSsml (naming the line) for what cannot be read."""
    root, lines = parse_xml(document, "SSML", InvalidSsml)
    reader = _Reader(lines, language.split("-", maxsplit=1)[0])
    if local_name(root.tag) != "speak":
        raise _error(
            f"the root element is <{local_name(root.tag)}>; an SSML document is one <speak> element", lines, root
        )
    reader.element(root, Voicing(language=_language(root.get(_XML_LANG), lines, root)), 0)
    check_pauses(reader.spans)
    return Parsed(reader.spans, reader.warnings)


def check_pauses(spans: list[Span]) -> None:
    pauses = sum(1 for span in spans if span.pause_ms)
    if pauses > MAX_PAUSES:
        raise InvalidSsml(f"the text has {pauses} pauses; at most {MAX_PAUSES} are taken in one request")


def _error(message: str, lines: dict[int, int], element: ET.Element) -> InvalidSsml:
    line = line_of(lines, element)
    return InvalidSsml(f"SSML line {line}: {message}", details={"line": line})


def _language(value: str | None, lines: dict[int, int], element: ET.Element) -> str | None:
    """An xml:lang as an XTTS code (the API checks it is one it speaks)."""
    if value is None:
        return None
    code = xtts_language(value)
    if code is None:
        raise _error(f"xml:lang={value!r} is not a language tag such as en or de-DE", lines, element)
    return code


def _pause_ms(match: re.Match[str], where: str, lines_element: tuple[dict[int, int], ET.Element] | None) -> int:
    number, unit = Decimal(match.group(1)), match.group(2).lower()
    ms = int(number * (1 if unit == "ms" else 1000))
    if ms > MAX_BREAK_MS:
        message = f"{where} of {match.group(0).strip()} is longer than the {MAX_BREAK_MS} ms a pause may last"
        if lines_element is not None:
            raise _error(message, *lines_element)
        raise InvalidSsml(message)
    return ms


class _Reader:
    """Walks the tree once, depth first (bounded by MAX_DEPTH), writing spans."""

    def __init__(self, lines: dict[int, int], language: str) -> None:
        self.lines = lines
        self.language = language
        self.spans: list[Span] = []
        self.warnings: list[str] = []
        self._warned: set[str] = set()

    def element(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        tag = local_name(element.tag)
        handler = _TAGS.get(tag)
        if handler is None:
            self._warn(tag, f"<{tag}> is not SSML the farm speaks: the tag was left out, its text said")
            self.children(element, voicing, depth)
            return
        handler(self, element, voicing, depth)

    def children(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        self.text(element.text, voicing)
        for child in element:
            self.element(child, voicing, depth + 1)
            self.text(child.tail, voicing)

    def text(self, text: str | None, voicing: Voicing, verbatim: bool = False) -> None:
        if text:
            self.spans.append(Span(text, voicing=voicing, verbatim=verbatim))

    def error(self, message: str, element: ET.Element) -> InvalidSsml:
        return _error(message, self.lines, element)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    # --- the tags ---
    def speak(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        if depth > 0:
            raise self.error("<speak> inside <speak>", element)
        self.children(element, voicing, depth)

    def block(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        """<p> and <s>: their own lines, so that a sentence break falls between them."""
        self.text("\n", voicing)
        self.children(element, voicing, depth)
        self.text("\n", voicing)

    def pause(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        time, strength = element.get("time"), element.get("strength")
        if time is not None:
            match = _DURATION.fullmatch(time)
            if match is None:
                raise self.error(f'<break time="{time}">: give it as 700ms or 1.5s', element)
            ms = _pause_ms(match, "<break>", (self.lines, element))
        elif strength is not None:
            if strength not in BREAK_STRENGTHS_MS:
                raise self.error(f'<break strength="{strength}">: one of {", ".join(BREAK_STRENGTHS_MS)}', element)
            ms = BREAK_STRENGTHS_MS[strength]
        else:
            ms = BREAK_STRENGTHS_MS["medium"]
        if ms:
            self.spans.append(Span(pause_ms=ms, voicing=voicing))

    def say_as(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        kind = element.get("interpret-as", "")
        if kind not in _SAY_AS:
            raise self.error(f'<say-as interpret-as="{kind}">: one of {", ".join(_SAY_AS)}', element)
        content = "".join(element.itertext())
        lang = (voicing.language or self.language).split("-", maxsplit=1)[0]
        said = _say_as(kind, content, lang)
        if said is None:  # dates, times, or a language without number words: normalisation reads it as written
            self.text(content, voicing)
        else:
            self.text(said, voicing, verbatim=True)

    def sub(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        alias = element.get("alias")
        if alias is None:
            raise self.error("<sub> needs an alias (what is said instead of its text)", element)
        self.text(alias, voicing, verbatim=True)

    def lang(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        language = _language(element.get(_XML_LANG), self.lines, element)
        if language is None:
            raise self.error("<lang> needs xml:lang (the language of its text)", element)
        self.children(element, replace(voicing, language=language), depth)

    def voice(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        name = (element.get("name") or "").strip()
        if not name or len(name) > 200:
            raise self.error("<voice> needs a name: a saved voice, a built-in speaker or an alias", element)
        if set(element.attrib) - {"name"}:
            self._warn("voice-attributes", "<voice> is chosen by name only: its other attributes were left out")
        self.children(element, replace(voicing, voice=name), depth)

    def prosody(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        if set(element.attrib) - {"rate"}:
            self._warn("prosody", "<prosody> changes the rate only (XTTS has no pitch or volume control)")
        rate = element.get("rate")
        if rate is None:
            self.children(element, voicing, depth)
            return
        factor = _rate(rate)
        if factor is None:
            raise self.error(
                f'<prosody rate="{rate}">: x-slow, slow, medium, fast, x-fast, a percentage (80%, +20%) or a factor',
                element,
            )
        speed = (voicing.speed or 1.0) * factor
        if not MIN_RATE <= speed <= MAX_RATE:
            raise self.error(f'<prosody rate="{rate}"> makes a speed of {speed:g}: {MIN_RATE}-{MAX_RATE}', element)
        self.children(element, replace(voicing, speed=speed), depth)

    def plain(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        self.children(element, voicing, depth)

    def phoneme(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        self._warn("phoneme", "<phoneme> is said as its text (XTTS reads text): a lexicon alias respells a word")
        self.children(element, voicing, depth)

    def audio(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        self._warn("audio", "<audio> is never fetched: its text (if any) was said instead")
        self.children(element, voicing, depth)

    def mark(self, element: ET.Element, voicing: Voicing, depth: int) -> None:
        self._warn("mark", "<mark> was left out (the farm sends no mark events)")


_TAGS = {
    "speak": _Reader.speak,
    "p": _Reader.block,
    "s": _Reader.block,
    "break": _Reader.pause,
    "say-as": _Reader.say_as,
    "sub": _Reader.sub,
    "lang": _Reader.lang,
    "voice": _Reader.voice,
    "prosody": _Reader.prosody,
    "emphasis": _Reader.plain,
    "phoneme": _Reader.phoneme,
    "audio": _Reader.audio,
    "mark": _Reader.mark,
}


def _rate(rate: str) -> float | None:
    value = rate.strip().lower()
    if value in RATES:
        return RATES[value]
    percent = re.fullmatch(r"([+-]?)(\d{1,3}(?:\.\d+)?)%", value)
    if percent:
        sign, amount = percent.groups()
        number = float(amount)
        return 1 + number / 100 if sign == "+" else 1 - number / 100 if sign == "-" else number / 100
    factor = re.fullmatch(r"\d{1,2}(?:\.\d{1,3})?", value)
    return float(value) if factor else None


def _say_as(kind: str, content: str, lang: str) -> str | None:
    """say-as content in words, or None when normalisation is to read it (dates, times) or cannot (no word table)."""
    text = content.strip()
    if kind in ("characters", "spell-out"):
        return " ".join(_spell(ch, lang) for ch in text if not ch.isspace())
    if lang not in WORDS or kind in ("date", "time"):
        return None
    if kind == "digits":
        return " ".join(say_number(int(ch), lang) for ch in text if ch.isdigit()) or None
    if kind == "telephone":
        groups = re.findall(r"\d+", text)
        return ", ".join(" ".join(say_number(int(d), lang) for d in group) for group in groups) or None
    number = _number(text)
    if number is None:
        return None
    return say_number(number, lang, "ordinal" if kind == "ordinal" else "cardinal")


def _spell(ch: str, lang: str) -> str:
    if ch.isdigit() and lang in WORDS:
        return say_number(int(ch), lang)
    return ch.upper() if ch.isalpha() else ch


def _number(text: str) -> Decimal | int | None:
    cleaned = re.sub(r"[\s,_'’]", "", text.rstrip(".")).removesuffix("th").removesuffix("st")
    cleaned = cleaned.removesuffix("nd").removesuffix("rd")
    if not re.fullmatch(r"-?\d{1,30}(?:\.\d{1,10})?", cleaned):
        return None
    try:
        number = Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only what Decimal reads
        return None
    return int(number) if number == number.to_integral_value() and "." not in cleaned else number
