"""An audiobook file from a book's chapters of audio: M4B (AAC in MP4, its chapters as MP4 chapter marks) or MP3
(ID3v2 CHAP and CTOC frames), with its title, author and cover, at a target loudness.

Loudness follows EBU R128 as ffmpeg's `loudnorm` measures it, in two passes: the first measures the whole book's
integrated loudness, true peak and range; the second applies one linear gain computed from them (`linear=true`), so
that the book's dynamics are kept (a single pass would compress them as it goes) and every chapter is as loud as it
was relative to the others (audio whose peaks stand too high above its loudness for one gain gets a limiter:
`loudness_filter`). Chapters are separated by `pause_ms` of silence, which belongs to the chapter before it;
chapter marks are at each chapter's first sample. GET /books/{id}/audio serves it (api/book_audio.py); Ogg Opus and
WAV are made the same way, without a cover."""

from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from api.encoding import EncoderFailed
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH

BookFormat = Literal["m4b", "mp3", "opus", "wav"]
TRUE_PEAK_DBTP: Final = -1.0
LIMITER_MARGIN_DB: Final = 1.0
MAKE_UP_PASSES: Final = 4
MAKE_UP_WITHIN_LU: Final = 0.3
LOUDNESS_RANGE_LU: Final = 50.0  # the widest loudnorm takes: one linear gain only while the range is within it
_PCM: Final = ("-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1")
_OUTPUT: Final[dict[str, tuple[str, ...]]] = {
    # AAC at 44.1 kHz: what audiobook players expect of an M4B (24 kHz AAC plays, but some apps refuse it).
    "m4b": ("-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-movflags", "+faststart", "-f", "ipod"),
    "mp3": ("-c:a", "libmp3lame", "-b:a", "64k", "-ar", "44100", "-id3v2_version", "3", "-f", "mp3"),
    # Ogg Opus keeps the chapters as Vorbis comments (CHAPTER001=...); WAV has tags but no chapters.
    "opus": ("-c:a", "libopus", "-b:a", "48k", "-ar", "48000", "-f", "ogg"),
    "wav": ("-c:a", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-f", "wav"),
}
_WITH_COVER: Final = ("m4b", "mp3")  # the formats whose players show an attached picture
COVER_TYPES: Final = {"image/jpeg": "mjpeg", "image/png": "png"}


@dataclass(frozen=True)
class ChapterAudio:
    title: str
    pcm: bytes  # 16-bit little-endian mono at SAMPLE_RATE


@dataclass(frozen=True)
class BookInfo:
    title: str | None = None
    author: str | None = None
    cover: bytes | None = None
    cover_type: str | None = None  # image/jpeg or image/png


@dataclass(frozen=True)
class Mark:
    """A chapter's place in the book's audio, in milliseconds."""

    title: str
    start_ms: int
    end_ms: int


def chapter_marks(chapters: list[ChapterAudio], pause_ms: int) -> list[Mark]:
    """Where each chapter starts and ends, its pause after it included (the last one has none)."""
    return marks_of([(c.title, len(c.pcm) // SAMPLE_WIDTH) for c in chapters], pause_ms)


def marks_of(chapters: list[tuple[str, int]], pause_ms: int) -> list[Mark]:
    """`chapter_marks` of chapters given as (title, samples)."""
    marks, at = [], 0
    pause = round(pause_ms * SAMPLE_RATE / 1000)
    for n, (title, samples) in enumerate(chapters):
        start = round(at * 1000 / SAMPLE_RATE)
        at += samples + (pause if n < len(chapters) - 1 else 0)
        marks.append(Mark(title, start, round(at * 1000 / SAMPLE_RATE)))
    return marks


def book_pcm(chapters: list[ChapterAudio], pause_ms: int) -> bytes:
    silence = bytes(round(pause_ms * SAMPLE_RATE / 1000) * SAMPLE_WIDTH)
    return silence.join(chapter.pcm for chapter in chapters)


def audiobook(
    chapters: list[ChapterAudio], info: BookInfo, fmt: BookFormat, loudness_lufs: float = -18.0, pause_ms: int = 2000
) -> bytes:
    """The book as one file in `fmt`, at `loudness_lufs` integrated (true peak at most TRUE_PEAK_DBTP)."""
    with tempfile.TemporaryDirectory(prefix="xtts-book-") as folder:
        pcm = Path(folder) / "book.pcm"
        pcm.write_bytes(book_pcm(chapters, pause_ms))
        return audiobook_of_file(pcm, chapter_marks(chapters, pause_ms), info, fmt, loudness_lufs)


def audiobook_of_file(pcm: Path, marks: list[Mark], info: BookInfo, fmt: BookFormat, loudness_lufs: float) -> bytes:
    """`audiobook` of a book whose PCM is in the file `pcm` (written a chapter at a time: a book of hours never
    sits in memory whole), its chapters at `marks`."""
    gain = loudness_filter(pcm, loudness_lufs)
    with tempfile.TemporaryDirectory(prefix="xtts-book-") as folder:
        work = Path(folder)
        (work / "meta.txt").write_text(_ffmetadata(info, marks), encoding="utf-8")
        command = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", *_PCM, "-i", str(pcm)]
        command += ["-f", "ffmetadata", "-i", str(work / "meta.txt")]
        maps = ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1"]
        if info.cover and info.cover_type in COVER_TYPES and fmt in _WITH_COVER:
            cover = work / "cover"
            cover.write_bytes(info.cover)
            command += ["-f", "image2", "-c:v", COVER_TYPES[info.cover_type], "-i", str(cover)]
            maps += ["-map", "2:v", "-c:v", "copy", "-disposition:v", "attached_pic"]
        out = work / f"book.{fmt}"
        command += [*maps, "-af", gain, *_OUTPUT[fmt], "-y", str(out)]
        _run(command, fmt)
        return out.read_bytes()


def loudness_filter(pcm: Path, target_lufs: float) -> str:
    """The ffmpeg filter that brings the PCM in file `pcm` to `target_lufs` with its true peak at most
    TRUE_PEAK_DBTP.

    loudnorm's second pass with one linear gain where the gain leaves the peaks below the ceiling. Where it does not
    (audio whose peaks stand far above its loudness: more than the 17 dB between -18 LUFS and -1 dBTP), or where
    loudnorm would not keep to one gain (a range it measures as 0: a short or uniform recording), loudnorm falls
    back to its dynamic mode, which misses the target by several LU (and resamples to 192 kHz); the gain is then
    applied with a limiter holding the peaks under the ceiling, and made up for the loudness the limiter takes off
    them (measured again, a few times at most: each is a pass over the whole book)."""
    measured = measure_loudness(pcm, target_lufs)
    found, peak, spread = float(measured["input_i"]), float(measured["input_tp"]), float(measured["input_lra"])
    if not math.isfinite(found):
        return "anull"  # silence: nothing to bring up
    gain = target_lufs - found
    if peak + gain <= TRUE_PEAK_DBTP and spread > 0:
        return (
            f"loudnorm=I={target_lufs}:TP={TRUE_PEAK_DBTP}:LRA={LOUDNESS_RANGE_LU}:linear=true"
            f":measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
            f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
        )
    previous: tuple[float, float] | None = None
    for _ in range(MAKE_UP_PASSES):
        after = float(measure_loudness(pcm, target_lufs, _limited(gain))["input_i"])
        if not math.isfinite(after) or abs(target_lufs - after) <= MAKE_UP_WITHIN_LU:
            break
        if previous is not None and after - previous[1] < 0.5 * (gain - previous[0]):
            gain = previous[0]  # the limiter takes what is added (low frequencies K-weighting hardly counts)
            break
        previous = (gain, after)
        gain += target_lufs - after
    return _limited(gain)


def _limited(gain_db: float) -> str:
    # The limiter holds sample peaks; true peaks (between samples, and after a lossy encoder) stand up to about
    # 1 dB above them, hence the margin.
    ceiling = 10 ** ((TRUE_PEAK_DBTP - LIMITER_MARGIN_DB) / 20)
    return f"volume={gain_db:.3f}dB,alimiter=limit={ceiling:.5f}:attack=1:release=50:level=false"


def measure_loudness(pcm: Path, target_lufs: float, before: str | None = None) -> dict[str, str]:
    """loudnorm's first pass over the PCM in file `pcm`: its integrated loudness, true peak, range and threshold,
    and the offset (of the audio as the filter `before` leaves it, where one is given)."""
    measure = f"loudnorm=I={target_lufs}:TP={TRUE_PEAK_DBTP}:LRA={LOUDNESS_RANGE_LU}:print_format=json"
    command = ["ffmpeg", "-hide_banner", "-nostats", *_PCM, "-i", str(pcm)]
    command += ["-af", f"{before},{measure}" if before else measure, "-f", "null", "-"]
    stderr = _run(command, "loudness")
    found = re.search(r"\{[^{}]*\"input_i\"[^{}]*\}", stderr)
    if found is None:
        raise EncoderFailed("ffmpeg's loudnorm measured nothing")
    measured: dict[str, str] = json.loads(found.group(0))
    return measured


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise EncoderFailed(f"ffmpeg could not make the {what} (exit {done.returncode}): {stderr.strip()[-500:]}")
    return stderr


def _ffmetadata(info: BookInfo, marks: list[Mark]) -> str:
    """ffmpeg's metadata file: the book's tags, then a [CHAPTER] section per chapter."""
    lines = [";FFMETADATA1"]
    for key, value in (("title", info.title), ("album", info.title), ("artist", info.author), ("genre", "Audiobook")):
        if value:
            lines.append(f"{key}={_escaped(value)}")
    for mark in marks:
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={mark.start_ms}", f"END={mark.end_ms}"]
        lines.append(f"title={_escaped(mark.title)}")
    return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    """A value as ffmetadata writes it: '=', ';', '#', '\\' and line breaks escaped with a backslash."""
    return re.sub(r"([=;#\\\n])", r"\\\1", " ".join(value.split()))
