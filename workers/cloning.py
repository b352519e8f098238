"""Cloning a voice from reference audio with the worker's model (XTTS's own conditioning code)."""

from __future__ import annotations

import numpy as np
import torch

from voices_store.latents import Latents
from voices_store.uploads import CLONE_SAMPLE_RATE
from workers.engine import XttsEngine


@torch.inference_mode()
def clone(engine: XttsEngine, references: list[np.ndarray]) -> Latents:
    """What `Xtts.get_conditioning_latents` computes, from decoded audio instead of file paths: a speaker
    embedding per reference (averaged) and GPT latents over all references joined."""
    model, config = engine.model, engine.model.config
    max_samples = CLONE_SAMPLE_RATE * int(getattr(config, "max_ref_len", 30))
    audios = [
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, :max_samples].to(engine.device)
        for a in references
    ]
    embedding = torch.stack([model.get_speaker_embedding(a, CLONE_SAMPLE_RATE) for a in audios]).mean(dim=0)
    gpt_latent = model.get_gpt_cond_latents(
        torch.cat(audios, dim=-1),
        CLONE_SAMPLE_RATE,
        length=int(getattr(config, "gpt_cond_len", 30)),
        chunk_length=int(getattr(config, "gpt_cond_chunk_len", 4)),
    )
    return Latents(
        gpt_latent.float().cpu().numpy().reshape(1, 32, -1), embedding.float().cpu().numpy().reshape(1, 512, 1)
    )
