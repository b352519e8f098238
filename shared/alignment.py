"""Character timing of spoken audio: when each character of a text is said, in milliseconds, as voice agents read it
(ElevenLabs' `alignment`: `chars`, `charStartTimesMs`, `charDurationsMs`) and as captions are cut from it.

The timing is exact where the farm knows it exactly, at the joins between segments (a segment's first character
starts with its first sample, its last ends with its last), and within a segment an estimate proportional to the
text: letters and digits weigh 1, other characters (spaces, punctuation) half as much. XTTS's GPT attends from audio
tokens to text tokens, but nothing in the farm reads that attention yet, so every timing says `estimate`
(`ALIGNMENT_SOURCE`).

A segment's audio is streamed before its length is known, so `StreamingAligner` times its characters chunk by
chunk: a chunk carries the characters that start within it by the estimate (never the last one, which ends with the
segment), their times relative to the chunk's first sample and never past its end; the segment's last chunk carries
the rest, spread over what is left of it. What was sent is never revised: an agent interrupted mid-segment knows
exactly which characters the audio it received covers."""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGNMENT_SOURCE = "estimate"


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


class StreamingAligner:
    """Times one text spoken by a stream of audio chunks (see the module's text). `expected_samples`: the audio the
    text should make (an estimate: the real length is known at the last chunk only)."""

    def __init__(self, text: str, expected_samples: int, rate: int) -> None:
        self.text, self.rate = text, rate
        self._expected = max(1, expected_samples)
        self._sent = 0  # characters already timed
        self._at = 0.0  # where the last timed character ends (samples from the text's first)
        self._samples = 0  # audio so far

    def chunk(self, samples: int, last: bool) -> CharTiming:
        """The characters this chunk of `samples` (the text's last chunk when `last`) carries, relative to its
        first sample."""
        begin, self._samples = self._samples, self._samples + samples
        if last:
            chars = self.text[self._sent :]
            starts, ends = _spread(chars, max(self._at, float(begin)), float(self._samples))
            self._sent = len(self.text)
            return _timing(chars, starts, ends, float(begin), self.rate)
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


@dataclass(frozen=True)
class Timed:
    """The timing a chunk carries: of the text as written and of the text as normalised (and so said)."""

    written: CharTiming
    said: CharTiming


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

    def chunk(self, segment: int, samples: int, last: bool) -> Timed:
        """Segment `segment` (0: the utterance's first) made a chunk of `samples`; `last`: its last one."""
        final = last and segment == len(self._said) - 1
        return Timed(self._written.chunk(samples, final), self._said[segment].chunk(samples, last))
