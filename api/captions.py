"""Captions of a job's audio, GET /jobs/{id}/captions: a cue per segment (a sentence, or a few: exact, from the
samples each segment made) or per word (shared/alignment.py's timing within its segment), in WebVTT or SRT, written
by webvtt-py. Only segments whose audio is complete are captioned: a running job's captions grow as it goes."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from webvtt import Caption, WebVTT

from shared.alignment import Mark, segment_timing
from shared.models import Job, JobState

CaptionFormat = Literal["vtt", "srt"]
Granularity = Literal["sentence", "word"]
MEDIA_TYPES = {"vtt": "text/vtt; charset=utf-8", "srt": "application/x-subrip; charset=utf-8"}
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str


def cues(
    job: Job, granularity: Granularity, marks: Callable[[int], tuple[Mark, ...] | None] = lambda index: None
) -> list[Cue]:
    """The job's cues, from its segments (loaded with it), in order; pauses are silence, not cues. `marks`: a
    segment's attention marks, where they are still known (the word cues follow them)."""
    out: list[Cue] = []
    at = 0  # samples before the segment
    for segment in job.segments:
        if segment.state != JobState.SUCCEEDED.value:
            break  # later audio is not complete yet: its position is not known either
        start_ms = round(at * 1000 / job.sample_rate)
        end_ms = round((at + segment.samples) * 1000 / job.sample_rate)
        if segment.text.strip():
            if granularity == "sentence":
                out.append(Cue(start_ms, end_ms, segment.text.strip()))
            else:
                out += word_cues(segment.text, segment.samples, marks(segment.index), job.sample_rate, start_ms)
        at += segment.samples
    return out


def word_cues(text: str, samples: int, marks: tuple[Mark, ...] | None, rate: int, offset_ms: int) -> list[Cue]:
    """A cue per word of a segment of `samples` that starts at `offset_ms` (its marks' timing where it has them)."""
    timing, _source = segment_timing(text, samples, marks, rate)
    words = []
    for match in _WORD.finditer(text):
        first, last = match.start(), match.end() - 1
        end = timing.starts_ms[last] + timing.durations_ms[last]
        words.append(Cue(offset_ms + timing.starts_ms[first], offset_ms + end, match.group()))
    return words


def _stamp(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def render(found: list[Cue], fmt: CaptionFormat) -> str:
    document = WebVTT()
    for cue in found:
        document.captions.append(Caption(_stamp(cue.start_ms), _stamp(cue.end_ms), cue.text))
    if fmt == "vtt":
        return str(document.content)
    out = io.StringIO()
    document.write(out, format="srt")
    return out.getvalue() + "\n"
