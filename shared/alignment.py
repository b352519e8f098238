"""Character timing of spoken audio: when each character of a text is said, in milliseconds, as voice agents read it
(ElevenLabs' `alignment`: `chars`, `charStartTimesMs`, `charDurationsMs`) and as captions are cut from it.

The timing is exact where the farm knows it exactly, at the joins between segments (a segment's first character
starts with its first sample, its last ends with its last). Within a segment it comes from XTTS's own attention while
that reads as an alignment (`AttentionCursor`: each audio token's most attended text token, moving forward through
the text), and the worker sends it with the audio as *marks* (this many characters said by that sample); where the
attention does not (a model that attends all over its text, as the random dev checkpoint does), it is an estimate
proportional to the text: letters and digits weigh 1, other characters (spaces, punctuation) half as much. Each
timing says which (`ATTENTION` or `ESTIMATE`).

A segment's audio is streamed before its length is known, so `StreamingAligner` times its characters chunk by
chunk: a chunk carries the characters its marks say were said by its end, or without marks those that start within
it by the estimate (never the last one, which ends with the segment), their times relative to the chunk's first
sample and never past its end; the segment's last chunk carries the rest, spread over what is left of it. What was
sent is never revised: an agent interrupted mid-segment knows exactly which characters the audio it received covers."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

ATTENTION, ESTIMATE = "attention", "estimate"
# The attention reads as an alignment while each audio token's most attended text token stays within this many
# tokens behind the furthest one reached and jumps at most this many ahead (a text token lasts several audio tokens).
MAX_BACKTRACK, MAX_JUMP = 2, 3
# ... and while it stays on one text token no longer than this many audio tokens (1.9 s: a pause at a comma is far
# shorter; attention stuck on one token is a model that lost its place).
MAX_DWELL = 40
# ... and only once it has followed the text for this many audio tokens (0.46 s) are its marks let out: a few foci in
# a row that happen to move forward (attention all over the text does that at times) say nothing. Until then its
# chunks are timed by the estimate (so a segment's first character still starts with its first sample).
PROBATION = 10

Mark = tuple[int, int]  # (characters said, by this sample of the segment's audio)


def weight(ch: str) -> float:
    return 1.0 if ch.isalnum() else 0.5


@dataclass(frozen=True)
class CharTiming:
    """Characters with their start and duration in milliseconds (relative to some audio's first sample)."""

    chars: list[str] = field(default_factory=list)
    starts_ms: list[int] = field(default_factory=list)
    durations_ms: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.chars)

    def shifted(self, offset_ms: int) -> CharTiming:
        return CharTiming(list(self.chars), [s + offset_ms for s in self.starts_ms], list(self.durations_ms))

    def joined(self, other: CharTiming) -> CharTiming:
        return CharTiming(
            self.chars + other.chars, self.starts_ms + other.starts_ms, self.durations_ms + other.durations_ms
        )


def _spread(text: str, start: float, end: float) -> tuple[list[float], list[float]]:
    """Each character's start and end between `start` and `end` (any unit), in proportion to its weight."""
    weights = [weight(ch) for ch in text]
    total = sum(weights) or 1.0
    starts, ends, at = [], [], start
    for w in weights:
        starts.append(at)
        at += (end - start) * w / total
        ends.append(at)
    if ends:
        ends[-1] = end
    return starts, ends


def _timing(chars: str, starts: list[float], ends: list[float], origin: float, rate: int) -> CharTiming:
    """Sample positions as milliseconds after `origin`, rounded so that one character ends where the next starts."""
    to_ms = [round((s - origin) * 1000 / rate) for s in starts]
    end_ms = [round((e - origin) * 1000 / rate) for e in ends]
    return CharTiming(list(chars), to_ms, [max(0, e - s) for s, e in zip(to_ms, end_ms, strict=True)])


def proportional(text: str, samples: int, rate: int) -> CharTiming:
    """The whole text spread over `samples` of audio."""
    starts, ends = _spread(text, 0.0, float(samples))
    return _timing(text, starts, ends, 0.0, rate)


def token_char_ends(pieces: Sequence[str], text: str) -> list[int] | None:
    """For each text token (`pieces`: what each stands for, as XTTS's tokenizer spells it: `[SPACE]` a space,
    `[en]` and other bracketed tags nothing), how many characters of `text` are said once it is: the tokenizer's
    cleaned, lower-cased text matched to `text` character by character. None if they do not match at all."""
    spelled = [" " if p == "[SPACE]" else "" if p.startswith("[") and p.endswith("]") else p for p in pieces]
    # Lower-cased a character at a time, one for one ("İ" alone lower-cases to two), so positions stay the text's.
    cleaned, lowered = "".join(spelled), "".join(ch.lower()[:1] or ch for ch in text)
    if not cleaned.strip() or not text:
        return None
    matcher = difflib.SequenceMatcher(None, cleaned, lowered, autojunk=False)
    if matcher.ratio() < 0.5:
        return None
    # Where each cleaned character lands in `text`: matched ones exactly, the others after the last match.
    position, lands = 0, [0] * (len(cleaned) + 1)
    blocks = {a + k: b + k for a, b, size in matcher.get_matching_blocks() for k in range(size)}
    for i in range(len(cleaned)):
        if i in blocks:
            position = blocks[i] + 1
        lands[i + 1] = position
    ends, at = [], 0
    for piece in spelled:
        at += len(piece)
        ends.append(lands[at])
    ends[-1] = len(text)
    return [min(max(e, 0), len(text)) for e in itertools.accumulate(ends, max)]


def segment_timing(text: str, samples: int, marks: Sequence[Mark] | None, rate: int) -> tuple[CharTiming, str]:
    """A whole segment's timing once its audio is complete, and its source: between its marks, where its attention
    gave them (each mark's characters end at its sample), else proportional to the text."""
    inside = [mark for mark in marks or () if mark[1] < samples]  # one at the very end says nothing
    if not inside:
        return proportional(text, samples, rate), ESTIMATE
    starts, ends, sent, at = _marked_spans(text, 0, 0.0, inside, float(samples))
    rest_starts, rest_ends = _spread(text[sent:], at, float(samples))
    return _timing(text, starts + rest_starts, ends + rest_ends, 0.0, rate), ATTENTION


def _marked_spans(
    text: str, sent: int, at: float, marks: Sequence[Mark], limit: float
) -> tuple[list[float], list[float], int, float]:
    """The characters of `text` after the first `sent` that the marks say were said, each mark's spread from `at`
    (where the last timed one ends) up to its sample, never past `limit`; the text's last character always waits
    for its end. Their starts and ends, and the new `sent` and `at`."""
    starts: list[float] = []
    ends: list[float] = []
    for said, sample in marks:
        count = min(said, len(text) - 1)
        if count <= sent:
            continue
        end = max(at, min(float(sample), limit))
        own_starts, own_ends = _spread(text[sent:count], at, end)
        starts, ends, sent, at = starts + own_starts, ends + own_ends, count, end
    return starts, ends, sent, at


Step = tuple[int, int]  # (characters said, by the audio token of this index, counted from its part's first)


class AttentionCursor:
    """Follows a part's attention from audio tokens to text tokens: `advance` takes the text token each new audio
    token attended to most (None: unknown) and says when characters were said. The first focus far from the text's
    start, one far behind what was reached or a jump far ahead, and the cursor is lost for good: the rest of the part
    is timed by the estimate. Once it reaches the last text token it is done: what the model attends to while it
    finishes (a pause, the text's end) no longer matters."""

    def __init__(self, char_ends: Sequence[int] | None) -> None:
        self.char_ends = list(char_ends or [])
        self.lost = not self.char_ends
        self._reached = -1  # the furthest text token attended to
        self._said = 0  # characters said (those of the tokens before the one being said)
        self._dwell = 0  # audio tokens since the cursor last moved
        self._followed = 0  # audio tokens followed so far
        self._held: list[Step] = []  # steps made during the probation, with their token's index from the part's start

    def advance(self, focus: Sequence[int | None]) -> list[Step] | None:
        """The steps that audio tokens with these foci make, each with its token's index counted from the part's
        first token; None while the cursor is on probation or lost (one lost later gives the steps before it)."""
        if self.lost:
            return None
        steps: list[Step] = []
        for f in focus:
            index, self._followed = self._followed, self._followed + 1
            if self._reached == len(self.char_ends) - 1:
                continue  # done
            self._dwell += 1
            if f is None or not self._follows(f):
                self.lost = True
                break
            if f > self._reached:
                self._reached, self._dwell = f, 0
                said = self.char_ends[f - 1] if f > 0 else 0
                if said > self._said:
                    self._said = said
                    steps.append((said, index))
        if self._followed - (1 if self.lost else 0) < PROBATION:
            self._held += steps
            return None
        released, self._held = self._held + steps, []
        return None if self.lost and not released else released

    def _follows(self, f: int) -> bool:
        """Whether a focus on text token `f` keeps the cursor on the text."""
        return self._reached - MAX_BACKTRACK <= f <= self._reached + MAX_JUMP and self._dwell <= MAX_DWELL


class StreamingAligner:
    """Times one text spoken by a stream of audio chunks (see the module's text). `expected_samples`: the audio the
    text should make (an estimate: the real length is known at the last chunk only)."""

    def __init__(self, text: str, expected_samples: int, rate: int) -> None:
        self.text, self.rate = text, rate
        self._expected = max(1, expected_samples)
        self._sent = 0  # characters already timed
        self._at = 0.0  # where the last timed character ends (samples from the text's first)
        self._samples = 0  # audio so far

    def chunk(self, samples: int, last: bool, marks: Sequence[Mark] | None = None) -> CharTiming:
        """The characters this chunk of `samples` (the text's last chunk when `last`) carries, relative to its
        first sample; `marks` (characters said by a sample of the text's audio), when the attention gives them."""
        begin, self._samples = self._samples, self._samples + samples
        if marks is not None and not last:
            return self._marked(marks, float(begin))
        if last:
            first = self._sent
            starts, ends, self._sent, self._at = _marked_spans(
                self.text, self._sent, max(self._at, float(begin)), marks or (), float(self._samples)
            )
            rest_starts, rest_ends = _spread(self.text[self._sent :], self._at, float(self._samples))
            self._sent = len(self.text)
            return _timing(self.text[first:], starts + rest_starts, ends + rest_ends, float(begin), self.rate)
        expected = max(self._expected, self._samples + 1)
        starts, ends = _spread(self.text, 0.0, float(expected))
        count = self._sent
        while count < len(self.text) - 1 and starts[count] < self._samples:
            count += 1
        if count == self._sent:
            return CharTiming()
        chars = self.text[self._sent : count]
        # Spread over their estimated span, kept after what was sent and within the audio sent with them.
        span_start = max(self._at, float(begin))
        span_end = max(span_start, min(ends[count - 1], float(self._samples)))
        own_starts, own_ends = _spread(chars, span_start, span_end)
        self._sent, self._at = count, span_end
        return _timing(chars, own_starts, own_ends, float(begin), self.rate)

    def _marked(self, marks: Sequence[Mark], begin: float) -> CharTiming:
        """The characters the marks say were said, within this chunk's audio."""
        first = self._sent
        starts, ends, self._sent, self._at = _marked_spans(
            self.text, self._sent, max(self._at, begin), marks, float(self._samples)
        )
        return _timing(self.text[first : self._sent], starts, ends, begin, self.rate)


@dataclass(frozen=True)
class Timed:
    """The timing a chunk carries: of the text as written and of the text as normalised (and so said)."""

    written: CharTiming
    said: CharTiming
    source: str = ESTIMATE  # how the said text was timed within its segment


class UtteranceAligner:
    """Times a written text said as one or more segments (its normalised pieces, in order): the written text across
    all of their audio (exact where the utterance starts and ends), each segment's said text across its own audio
    (exact at every join). `expected`: each segment's estimated samples."""

    def __init__(self, written: str, said: list[str], expected: list[int], rate: int) -> None:
        self._written = StreamingAligner(written, sum(expected), rate)
        self._said = [StreamingAligner(text, samples, rate) for text, samples in zip(said, expected, strict=True)]

    @property
    def segments(self) -> int:
        return len(self._said)

    def chunk(self, segment: int, samples: int, last: bool, marks: Sequence[Mark] | None = None) -> Timed:
        """Segment `segment` (0: the utterance's first) made a chunk of `samples`; `last`: its last one; `marks`:
        its attention's, if any (they time the said text; the written one keeps the estimate)."""
        final = last and segment == len(self._said) - 1
        said = self._said[segment].chunk(samples, last, marks)
        # A segment's last chunk spreads what its marks leave by the estimate: attention only if it had some.
        source = ATTENTION if marks is not None and (marks or not last) else ESTIMATE
        return Timed(self._written.chunk(samples, final), said, source)
