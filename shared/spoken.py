"""What a request says, segment by segment: the text of each (normalised, split at sentences), with the language,
voice and speed it is said in, or the pause it is.

A request's text becomes spans (shared/ssml.py: an SSML document, or plain text with its `[pause:...]` tags, or the
`segments` a request lists); each span is normalised in its own language (unless `normalize` is off; say-as and sub
are words already), neighbours said the same way are joined and split into segments as one text, and every pause is
a segment of its own that the worker fills with silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from shared import normalization
from shared.normalization import EmojiMode, NormalizeMode
from shared.ssml import MAX_BREAK_MS, Span, Voicing
from shared.text import split_text


@dataclass(frozen=True)
class Segment:
    """One segment: text said in `language`, in `voice` (None: the request's) at `speed` (a factor on the request's;
    None: 1), or, with no text, `pause_ms` of silence."""

    text: str
    language: str
    voice: str | None = None
    speed: float | None = None
    pause_ms: int = 0

    @property
    def is_pause(self) -> bool:
        return self.pause_ms > 0 and not self.text


@dataclass
class Spoken:
    segments: list[Segment]
    warnings: list[str] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """The segments with words (a pause has none)."""
        return [segment.text for segment in self.segments if not segment.is_pause]

    @property
    def pause_ms(self) -> int:
        return sum(segment.pause_ms for segment in self.segments)

    def languages(self) -> set[str]:
        return {segment.language for segment in self.segments if not segment.is_pause}

    def voices(self) -> set[str]:
        return {segment.voice for segment in self.segments if segment.voice is not None and not segment.is_pause}


# A language's respelling (its lexicons' aliases, shared/lexicons.py), applied before normalisation.
Respell = Callable[[str], Callable[[str], str]]


def _as_written(language: str) -> Callable[[str], str]:
    return lambda text: text


def segments_of(
    spans: list[Span], language: str, normalize: NormalizeMode, emoji: EmojiMode, respell: Respell = _as_written
) -> Spoken:
    """The segments `spans` are said as, in a request in `language`, respelled by `respell` (pronunciation
    lexicons) before they are normalised."""
    spoken = Spoken([])
    group: list[str] = []
    said_as: Voicing | None = None
    spaced = True  # whether the text so far ends with a space, as written
    for span in spans:
        voicing = _absolute(span.voicing, language)
        if span.pause_ms:
            _add_text(spoken, group, said_as)
            group, said_as = [], None
            _add_pause(spoken, span.pause_ms, voicing)
            continue
        if voicing != said_as:
            _add_text(spoken, group, said_as)
            group, said_as = [], voicing
        # Each span is normalised alone (and comes back trimmed): the spaces between spans are those written.
        if group and (spaced or span.text[:1].isspace()):
            group.append(" ")
        written = span.text if span.verbatim else respell(voicing.language or language)(span.text)
        group.append(_normalized(replace(span, text=written), voicing, normalize, emoji, spoken.warnings))
        spaced = span.text[-1:].isspace()
    _add_text(spoken, group, said_as)
    return spoken


def _absolute(voicing: Voicing, language: str) -> Voicing:
    """Every span's language said (the request's where it names none); a speed of 1 is none."""
    speed = None if voicing.speed is None or voicing.speed == 1.0 else voicing.speed
    return Voicing(language=voicing.language or language, voice=voicing.voice, speed=speed)


def _normalized(span: Span, voicing: Voicing, normalize: NormalizeMode, emoji: EmojiMode, warnings: list[str]) -> str:
    if span.verbatim or normalize == "off":
        return span.text
    if span.text.isspace():  # the line breaks around <p> and <s>: nothing to normalise (they are most spans)
        return ""
    said = normalization.normalize(span.text, voicing.language or "en", emoji=emoji)
    warnings.extend(w for w in said.warnings if w not in warnings)
    return said.text


def _add_text(spoken: Spoken, group: list[str], voicing: Voicing | None) -> None:
    text = "".join(group)
    if voicing is None or not any(ch.isalnum() for ch in text):
        return  # markup's whitespace between two tags, or punctuation alone: nothing to say
    language = voicing.language or ""
    for piece in split_text(text, language):
        spoken.segments.append(Segment(piece, language, voicing.voice, voicing.speed))


def _add_pause(spoken: Spoken, pause_ms: int, voicing: Voicing) -> None:
    """A pause, or a longer one when it follows another at once (at most MAX_BREAK_MS together)."""
    last = spoken.segments[-1] if spoken.segments else None
    if last is not None and last.is_pause:
        spoken.segments[-1] = Segment("", last.language, pause_ms=min(MAX_BREAK_MS, last.pause_ms + pause_ms))
    else:
        spoken.segments.append(Segment("", voicing.language or "", pause_ms=pause_ms))
