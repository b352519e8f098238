"""The farm's audio format, defined once: XTTS-v2 speaks 24 kHz mono, carried as 16-bit little-endian PCM."""

from __future__ import annotations

SAMPLE_RATE = 24000
SAMPLE_WIDTH = 2  # bytes per sample (16-bit PCM)

# XTTS's GPT makes one audio token per 1024 samples of its 22.05 kHz output (about 46 ms), and speaks about 1.5 audio
# tokens per character of text (about 14 characters per second; the dev model's DEV_TOKENS_PER_CHAR too).
TOKEN_SECONDS = 1024 / 22050
TOKENS_PER_CHAR = 1.5


def speech_seconds(chars: float) -> float:
    """About how long XTTS takes to speak `chars` characters of text: an estimate before anything is synthesized."""
    return chars * TOKENS_PER_CHAR * TOKEN_SECONDS
