"""The farm's audio format, defined once: XTTS-v2 speaks 24 kHz mono, carried as 16-bit little-endian PCM."""

from __future__ import annotations

SAMPLE_RATE = 24000
SAMPLE_WIDTH = 2  # bytes per sample (16-bit PCM)
