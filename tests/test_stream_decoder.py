"""The linear-cost streaming decoder gives the audio of one-shot decoding, whatever the chunking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workers.engine import XttsEngine
from workers.stream_decoder import LinearResampler, StreamingDecoder, one_shot, snr_db

TORCH_THREADS = 2  # the session's engine (conftest.py) on both cores


def _chunks(total: int, generator: torch.Generator) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while start < total:
        end = min(total, start + int(torch.randint(1, 25, (1,), generator=generator)))
        bounds.append((start, end))
        start = end
    return bounds


@pytest.mark.parametrize("scale", [4.0, 24000 / 22050, 1 / 1.3, 1.25, 0.5])
def test_incremental_interpolation_is_pytorchs(scale: float) -> None:
    generator = torch.Generator().manual_seed(7)
    for length in (1, 2, 5, 57, 200):
        if int(length * scale) == 0:
            continue  # PyTorch refuses an empty output
        x = torch.randn(8, length, generator=generator)
        reference = F.interpolate(x[None], scale_factor=scale, mode="linear")[0]
        resampler = LinearResampler(scale)
        pieces = [resampler.push(x[:, a:b], final=b == length) for a, b in _chunks(length, generator)]
        streamed = torch.cat(pieces, dim=1)
        assert streamed.shape == reference.shape
        assert torch.allclose(streamed, reference, atol=1e-5)


def decoder_inputs(engine: XttsEngine, frames: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random GPT latents [frames, width] and a voice's speaker embedding, on the engine's device (a CUDA HiFi-GAN
    takes CUDA inputs; tests/test_gpu_readiness.py checks this with an engine on the meta device). The latents are
    drawn on the CPU from `generator`, so they are the same on every device."""
    latents = torch.randn(frames, engine.gpt_width, generator=generator).to(engine.device)
    voice = engine.builtin_voice(engine.speaker_names[0])
    assert voice is not None
    return latents, voice.to(engine.device).speaker_embedding


@pytest.mark.parametrize("speed", [1.0, 1.3, 0.8])
def test_streamed_audio_equals_one_shot_decoding(engine: XttsEngine, speed: float) -> None:
    generator = torch.Generator().manual_seed(int(speed * 10))
    latents, embedding = decoder_inputs(engine, 50, generator)
    reference = one_shot(engine.model.hifigan_decoder, latents, embedding, length_scale=1 / speed)
    decoder = StreamingDecoder(engine.model.hifigan_decoder, embedding, length_scale=1 / speed)
    pieces = [decoder.push(latents[a:b], final=b == len(latents)) for a, b in _chunks(len(latents), generator)]
    streamed = torch.cat(pieces)
    assert len(streamed) == len(reference)
    assert snr_db(reference, streamed) > 120  # float rounding only: no seams, no cross-fades
    assert sum(len(p) > 0 for p in pieces) > 2  # and it really streamed


def test_the_engine_streams_what_it_would_decode_at_once(engine: XttsEngine) -> None:
    """Chunk boundaries change nothing: the same seed gives the same audio for any stream_chunk_size."""
    from shared.params import SynthesisParams

    voice = engine.builtin_voice(engine.speaker_names[0])
    small = engine.synthesize(
        "Same audio.", "en", voice, SynthesisParams(min_new_tokens=40, max_new_tokens=40, stream_chunk_size=4), seed=5
    )
    large = engine.synthesize(
        "Same audio.", "en", voice, SynthesisParams(min_new_tokens=40, max_new_tokens=40, stream_chunk_size=400), seed=5
    )
    assert small.shape == large.shape
    assert snr_db(torch.from_numpy(large), torch.from_numpy(small)) > 120
