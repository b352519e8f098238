"""Conditioning latents: shape checks, and serialization that never unpickles.

XTTS conditions on `gpt_cond_latent` [1, rows, width] (width 1024 for XTTS-v2) and `speaker_embedding`
[1, 512, 1]. XTTS-v2's cloning makes 32 rows (its perceiver resampler); XTTS v1 made about 21.5 rows per second of
reference (65 for its default 3 s: the `default_speaker.json` coqui's official client ships); the GPT takes a
conditioning prefix of any length, and coqui's official server reshapes any number of rows. So any number from 1 to
MAX_GPT_ROWS is accepted. Clients often send them squeezed, as the official XTTS server returns them ([rows, width]
and [512]); both forms are accepted and normalized here, so that the model never fails as the single-server
API did with squeezed latents ("Tensors must have same number of dimensions: got 2 and 3").
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from voices_store.errors import InvalidLatents

# Four times XTTS-v2's 32 rows, twice the official client's 65. Why no more: every request the bound admits must fit
# the JSON body cap (api/request_bounds.py, 4 MB): 128 rows of 1024 numbers at full float32 precision take about
# 2.8 MB (21.6 bytes a number, measured), leaving room for a text of MAX_TEXT_CHARS; 1024 rows would need 22 MB, and
# a cap that size lets a body of short numbers ("0.0,") become about 280 MB of Python objects per request (measured).
# The prefix also costs every batch-mate of the sequence as many KV-cache columns (left padding).
MAX_GPT_ROWS = 128
MAX_GPT_WIDTH = 1024  # XTTS's GPT (v1 and v2); the dev checkpoint's is narrower
EMBEDDING_DIM = 512
MAX_ABS_VALUE = 1e4


@dataclass(frozen=True)
class Latents:
    gpt_cond_latent: np.ndarray  # float32 [1, rows, width]
    speaker_embedding: np.ndarray  # float32 [1, 512, 1]

    @property
    def width(self) -> int:
        return int(self.gpt_cond_latent.shape[-1])

    def digest(self) -> str:
        return hashlib.sha256(self.gpt_cond_latent.tobytes() + self.speaker_embedding.tobytes()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The squeezed lists the official XTTS server's /clone_speaker returns."""
        return {
            "gpt_cond_latent": self.gpt_cond_latent.reshape(-1, self.width).tolist(),
            "speaker_embedding": self.speaker_embedding.reshape(EMBEDDING_DIM).tolist(),
        }

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, gpt_cond_latent=self.gpt_cond_latent, speaker_embedding=self.speaker_embedding)
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> Latents:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(arrays["gpt_cond_latent"], arrays["speaker_embedding"])

    @classmethod
    def from_npy(cls, gpt_cond_latent: bytes, speaker_embedding: bytes) -> Latents:
        return cls(array_from_bytes(gpt_cond_latent), array_from_bytes(speaker_embedding))


def array_to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def array_from_bytes(data: bytes) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return array


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidLatents(f"{name} must be a nested list of numbers (a rectangular array)") from exc
    if array.dtype == object:
        raise InvalidLatents(f"{name} must be a rectangular array of numbers")
    if not np.isfinite(array).all():
        raise InvalidLatents(f"{name} contains NaN or infinite values")
    if array.size and np.abs(array).max() > MAX_ABS_VALUE:
        raise InvalidLatents(f"{name} has values beyond ±{MAX_ABS_VALUE:g}; these are not XTTS latents")
    return array


def parse_latents(gpt_cond_latent: Any, speaker_embedding: Any, width: int | None) -> Latents:
    """Validate client-supplied latents against the model's GPT width (None: any width up to MAX_GPT_WIDTH)."""
    gpt = _as_array("gpt_cond_latent", gpt_cond_latent)
    if gpt.ndim == 2:
        gpt = gpt[None]
    want_width = width or (gpt.shape[-1] if gpt.ndim and 0 < gpt.shape[-1] <= MAX_GPT_WIDTH else 0)
    rows_ok = gpt.ndim == 3 and gpt.shape[0] == 1 and 1 <= gpt.shape[1] <= MAX_GPT_ROWS
    if not rows_ok or gpt.shape[2] != want_width or want_width == 0:
        shown = width or "width"
        raise InvalidLatents(
            f"gpt_cond_latent has shape {list(np.shape(gpt_cond_latent))}; expected [1, rows, {shown}] (or "
            f"[rows, {shown}]) with 1 to {MAX_GPT_ROWS} rows" + ("" if width else f", at most {MAX_GPT_WIDTH} wide"),
            details={
                "field": "gpt_cond_latent",
                "expected": [1, "rows", width],
                "rows": [1, MAX_GPT_ROWS],
                "got": list(np.shape(gpt_cond_latent)),
            },
        )
    emb = _as_array("speaker_embedding", speaker_embedding)
    if emb.size != EMBEDDING_DIM or emb.ndim not in (1, 2, 3) or max(emb.shape, default=0) != EMBEDDING_DIM:
        raise InvalidLatents(
            f"speaker_embedding has shape {list(np.shape(speaker_embedding))}; expected [1, {EMBEDDING_DIM}, 1] "
            f"(or [{EMBEDDING_DIM}])",
            details={
                "field": "speaker_embedding",
                "expected": [1, EMBEDDING_DIM, 1],
                "got": list(np.shape(speaker_embedding)),
            },
        )
    return Latents(np.ascontiguousarray(gpt), np.ascontiguousarray(emb.reshape(1, EMBEDDING_DIM, 1)))
