"""Synthesis parameters: validated by the API, stored with the job, read back by the worker.

Defaults are pinned here, per request, because XTTS's `XttsConfig`, the shipped v2 `config.json` and the
`inference()` signature disagree; these are the shipped v2 config's values.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.audio import SAMPLE_RATE, TOKEN_SECONDS, TOKENS_PER_CHAR
from shared.settings import get_settings

# XTTS's GPT stops a segment at 605 audio tokens (about 28 s) whatever the text.
MAX_TOKENS_PER_SEGMENT = 605


SPEED_RANGE = (0.25, 4.0)


class SynthesisParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.75, gt=0.0, le=5.0, description="Sampling temperature of the GPT.")
    length_penalty: float = Field(1.0, ge=-10.0, le=10.0)
    repetition_penalty: float = Field(5.0, ge=1.0, le=50.0)
    top_k: int = Field(50, ge=1, le=1026)
    top_p: float = Field(0.85, gt=0.0, le=1.0)
    speed: float = Field(
        1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1], description="Speaking rate; 1.0 is the model's own."
    )
    stream_chunk_size: int = Field(
        default_factory=lambda: get_settings().DEFAULT_STREAM_CHUNK_SIZE,
        ge=1,
        le=400,
        description="Audio tokens (about 46 ms each) in the first streamed audio chunk of each segment "
        "(default: the farm's DEFAULT_STREAM_CHUNK_SIZE, 20 unless configured).",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="Sampling seed: the same text, voice, parameters and seed make the same audio (segment n of "
        "the text is sampled with seed + n). Left out, each job draws its own.",
    )
    min_new_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_TOKENS_PER_SEGMENT,
        description="Advanced: lower bound on audio tokens per segment (the dev model's noise "
        "never stops by itself, so tests and benchmarks pin the length).",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS_PER_SEGMENT, description="Advanced: upper bound on audio tokens per segment."
    )

    def estimated_tokens(self, chars: int) -> int:
        """The audio tokens a segment of `chars` characters will cost, before it is synthesized: its natural length
        (TOKENS_PER_CHAR), within min/max_new_tokens and the GPT's cap."""
        low = self.min_new_tokens or 1
        high = self.max_new_tokens or MAX_TOKENS_PER_SEGMENT
        return min(max(math.ceil(TOKENS_PER_CHAR * chars), low), high)

    def expected_samples(self, text: str, pause_ms: int = 0) -> int:
        """The audio a segment should make: a pause's silence, else its text's estimate (character timing spreads a
        streamed segment's characters over it until its real length is known)."""
        if pause_ms:
            return round(pause_ms * SAMPLE_RATE / 1000)
        return round(self.estimated_seconds(len(text)) * SAMPLE_RATE)

    def estimated_seconds(self, chars: int) -> float:
        """The audio a segment of `chars` characters will last (estimated_tokens, at this speed)."""
        return self.estimated_tokens(chars) * TOKEN_SECONDS / self.speed

    @model_validator(mode="after")
    def _bounds_ordered(self) -> SynthesisParams:
        if self.min_new_tokens and self.max_new_tokens and self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must not exceed max_new_tokens")
        return self
