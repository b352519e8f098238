"""The GPU path's known faults, checked where no GPU is: exactness without TF32, sampling without a host sync per
row, every tensor on the engine's device, and a worker that refuses a GPU it cannot use (issue 24).

Tests marked `cuda` run only on a GPU (scripts/gpu_check.sh runs them there)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tools.localfarm import run_worker_until_it_exits
from workers.batched_gpt import Sampling, SamplingTensors, process_scores, sample_rows
from workers.engine import XttsEngine

VOCAB = 1026  # XTTS-v2's audio tokens


def _probs(rows: int, seed: int) -> torch.Tensor:
    """Sampling distributions as the batch makes them: real filters (top-k, top-p) leave many exact zeros."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, VOCAB, generator=g) * 4
    samplings = [Sampling(0.75, 50, 0.85, 5.0), Sampling(1.0, 0, 1.0, 1.0), Sampling(0.5, 3, 0.9, 2.0)]
    chosen = [samplings[i % len(samplings)] for i in range(rows)]
    params = SamplingTensors.build(chosen, VOCAB, torch.device("cpu"))
    seen = torch.rand(rows, VOCAB, generator=g) < 0.05
    scores = process_scores(logits, params, seen, torch.zeros(rows, dtype=torch.bool), VOCAB - 1)
    return scores.softmax(dim=-1)


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# --- TF32 ----------------------------------------------------------------------------------------------
def test_the_tests_engine_runs_without_tf32(engine: XttsEngine) -> None:
    """Exactness is asserted on this engine (SNR > 120 dB, latents within 1e-4): TF32 would break that on a GPU."""
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32


# --- devices: every tensor a test or benchmark feeds the model is on the engine's device ---------------------
@pytest.fixture
def engine_elsewhere(engine: XttsEngine, monkeypatch: pytest.MonkeyPatch) -> XttsEngine:
    """The session's engine as if it ran on a device other than the CPU: `meta` (torch's shape-only device, always
    there). Its voices stay on the CPU, as a loaded engine's do; a helper that builds a tensor on a fixed device
    (or leaves a voice where it is) hands back a CPU tensor, which would reach a CUDA model as a device mismatch.
    Nothing here runs the model."""
    voice = engine.builtin_voice(engine.speaker_names[0])
    assert voice is not None and voice.speaker_embedding.device.type == "cpu"
    monkeypatch.setattr(engine, "device", "meta")
    return engine


def _devices(*tensors: torch.Tensor) -> set[str]:
    return {t.device.type for t in tensors}


def test_the_benchmarks_model_inputs_are_on_the_engines_device(engine_elsewhere: XttsEngine) -> None:
    from benchmarks import model_bench

    voice = model_bench.model_voice(engine_elsewhere)
    tokens = model_bench.text_tokens(engine_elsewhere, "Hi.")
    assert _devices(voice.gpt_cond_latent, voice.speaker_embedding, tokens) == {"meta"}


def test_the_stream_decoder_tests_inputs_are_on_the_engines_device(engine_elsewhere: XttsEngine) -> None:
    from tests.test_stream_decoder import decoder_inputs

    latents, embedding = decoder_inputs(engine_elsewhere, 5, torch.Generator().manual_seed(0))
    assert _devices(latents, embedding) == {"meta"}


def test_a_segment_carries_its_voice_and_text_to_the_engines_device(engine_elsewhere: XttsEngine) -> None:
    from shared.params import SynthesisParams

    voice = engine_elsewhere.builtin_voice(engine_elsewhere.speaker_names[0])
    assert voice is not None
    segment = engine_elsewhere.segment("k", "Hi.", "en", voice, SynthesisParams(), seed=0)
    tensors = [segment.cond_latent, segment.speaker_embedding, *(part.text_tokens for part in segment.parts)]
    assert _devices(*tensors) == {"meta"}


@pytest.mark.cuda
@pytest.mark.parametrize("speed", [1.0, 1.3, 0.8])
def test_streamed_audio_equals_one_shot_decoding_on_the_gpu(engine: XttsEngine, speed: float) -> None:
    """tests/test_stream_decoder.py's equality (SNR > 120 dB, TF32 off) with the engine and its inputs on the GPU."""
    from tests.test_stream_decoder import test_streamed_audio_equals_one_shot_decoding as streamed_equals_one_shot

    assert engine.device == "cuda"
    streamed_equals_one_shot(engine, speed)


# --- sampling: one argmax for the batch, each row from its own generator ------------------------------------
def test_batched_sampling_draws_what_torch_multinomial_draws_row_by_row() -> None:
    """Token for token, and generator state for generator state, what coqui's sampler (`torch.multinomial`) gives:
    over 40 steps of a batch of 8 seeded rows."""
    seeds = [3, 1, 4, 1, 5, 9, 2, 6]
    batched, reference = _generators(seeds), _generators(seeds)
    for step in range(40):
        probs = _probs(len(seeds), step)
        tokens = sample_rows(probs, batched)
        expected = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, reference, strict=True)])
        assert tokens.tolist() == expected.tolist()
        assert all(probs[i, t] > 0 for i, t in enumerate(tokens.tolist()))  # never a filtered-out token
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(batched, reference, strict=True))


def test_a_seeded_row_draws_the_same_alone_and_in_a_batch() -> None:
    seeds = [11, 12, 13, 14, 15]
    in_batch = _generators(seeds)
    alone = _generators(seeds)
    for step in range(30):
        probs = _probs(len(seeds), 100 + step)
        batched = sample_rows(probs, in_batch).tolist()
        assert batched == [int(sample_rows(probs[i : i + 1], [alone[i]])[0]) for i in range(len(seeds))]


def test_batched_sampling_calls_no_per_row_multinomial(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.multinomial checks its input with a `.item()`: one host sync per row per step on a GPU."""

    def refuse(*_: object, **__: object) -> torch.Tensor:
        raise AssertionError("torch.multinomial called: a host sync per row")

    monkeypatch.setattr(torch, "multinomial", refuse)
    monkeypatch.setattr(torch.Tensor, "multinomial", refuse)
    tokens = sample_rows(_probs(4, 0), _generators([1, 2, 3, 4]))
    assert tokens.shape == (4,)


def test_sampling_follows_the_distribution() -> None:
    """A check of the trick itself, independent of torch.multinomial: 20 000 draws from a known distribution."""
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([sample_rows(probs, [g]) for _ in range(20_000)]), minlength=4)
    frequencies = counts.double() / counts.sum()
    assert counts[3] == 0
    assert torch.allclose(frequencies, probs[0].double(), atol=0.015)


@pytest.mark.cuda
def test_batched_sampling_on_a_gpu_waits_for_nothing() -> None:
    """On a GPU: no host synchronisation at all while a batch of 32 rows is sampled (torch raises if one happens)."""
    probs = _probs(32, 7).cuda()
    generators = [torch.Generator(device="cuda").manual_seed(i) for i in range(32)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tokens = sample_rows(probs, generators)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    reference = [torch.Generator(device="cuda").manual_seed(i) for i in range(32)]
    expected = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, reference, strict=True)])
    assert tokens.tolist() == expected.tolist()


# --- a GPU the host shows but torch cannot use -------------------------------------------------------------
def _host_showing_a_gpu(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A worker's environment on a host whose driver lists one GPU (a stand-in `nvidia-smi` first on PATH) while
    torch reports no CUDA (this machine's torch sees none). No network, no Redis: the worker gets no further than
    its start-up checks, the model's (no XTTS-v2 download possible) coming after the GPU's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    gpu = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-1111-2222-3333-444444444444)"
    smi.write_text(f'#!/bin/sh\n[ "$1" = -L ] && echo "{gpu}"\n')
    smi.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "XTTS_MODEL": "xtts_v2",
        "COQUI_TOS_AGREED": "1",
        "MODEL_DIR": str(tmp_path / "models"),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "HF_HUB_OFFLINE": "1",
        **settings,
    }


def _start_worker(env: dict[str, str]) -> tuple[int, list[str]]:
    result = run_worker_until_it_exits(env)
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines() if "cannot start" in line]


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a GPU torch cannot use; here torch can")
@pytest.mark.slow
def test_a_worker_refuses_a_gpu_it_cannot_use_with_one_line(tmp_path: Path) -> None:
    status, reason = _start_worker(_host_showing_a_gpu(tmp_path))
    assert status != 0
    assert len(reason) == 1, reason
    assert "nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100" in reason[0] and "cannot use CUDA" in reason[0]
    assert "USE_CPU=1" in reason[0]


@pytest.mark.slow
def test_with_use_cpu_the_worker_goes_past_the_gpu_check(tmp_path: Path) -> None:
    status, reason = _start_worker(_host_showing_a_gpu(tmp_path, USE_CPU="1"))
    assert status != 0  # it stops later, for the model it cannot download here
    assert len(reason) == 1 and "cannot download XTTS-v2" in reason[0] and "nvidia-smi" not in reason[0]


def test_gpus_hidden_on_purpose_are_no_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import Settings
    from workers.devices import unusable_gpu

    for name, value in _host_showing_a_gpu(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert unusable_gpu(Settings(), False, "2.11.0", "13.0") is not None
    assert unusable_gpu(Settings(), True, "2.11.0", "13.0") is None
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert unusable_gpu(Settings(), False, "2.11.0", "13.0") is None
