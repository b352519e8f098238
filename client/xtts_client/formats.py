"""Audio formats: which one a file name asks for, and which ones the client makes itself from the farm's WAV."""

from __future__ import annotations

from pathlib import PurePath

FORMATS = ("wav", "pcm", "mp3", "opus", "aac", "flac")
# wav and pcm are the farm's 16-bit PCM, framed or not: the client asks for WAV and frames it itself, so they work
# with any farm. The others are encoded by the farm (its `response_format`).
CLIENT_SIDE = frozenset({"wav", "pcm"})
EXTENSIONS = {".wav": "wav", ".pcm": "pcm", ".raw": "pcm", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus"}
EXTENSIONS |= {".aac": "aac", ".flac": "flac"}
# Content types a farm may answer for each format: an answer in another one means the format was not applied.
CONTENT_TYPES = {
    "wav": ("audio/wav", "audio/x-wav", "audio/wave"),
    "pcm": ("audio/pcm", "audio/l16", "application/octet-stream"),
    "mp3": ("audio/mpeg", "audio/mp3"),
    "opus": ("audio/ogg", "audio/opus"),
    "aac": ("audio/aac", "audio/x-aac", "audio/aacp"),
    "flac": ("audio/flac", "audio/x-flac"),
}


def format_for(output: str | None, explicit: str | None) -> str:
    """The format to write: the one asked for, else the one the output file's extension names, else WAV."""
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"unknown format {explicit!r}; one of {', '.join(FORMATS)}")
        return explicit
    if output and output != "-":
        suffix = PurePath(output).suffix.lower()
        if suffix in EXTENSIONS:
            return EXTENSIONS[suffix]
        if suffix:
            raise ValueError(
                f"cannot tell the format from the extension {suffix!r}; give --format ({', '.join(FORMATS)})"
            )
    return "wav"


def answered_format(content_type: str | None) -> str | None:
    """The format a Content-Type header names, or None."""
    media = (content_type or "").split(";")[0].strip().lower()
    return next((fmt for fmt, types in CONTENT_TYPES.items() if media in types), None)
