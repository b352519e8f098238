"""Benchmarks of the engine in this process: streaming cost against one-shot synthesis, the batched GPT's step time
by batch size, and the GPU runs."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

from shared.params import SynthesisParams
from shared.settings import Settings
from workers import devmodel
from workers.batched_gpt import BatchedGPT, Sampling
from workers.engine import XttsEngine
from workers.scheduler import MAX_CHUNK_GROWTH
from workers.stream_decoder import StreamingDecoder, one_shot, snr_db

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / ".cache" / "bench-models"
TEXT = "The farm streams speech while it is still being generated, and this sentence is what it says."
CHUNK = 20


def _engine(full_size: bool = False, fp16: bool = False) -> XttsEngine:
    path = devmodel.ensure_checkpoint(MODELS / ("full" if full_size else "dev"), full_size=full_size)
    settings = Settings(CUSTOM_MODEL_PATH=str(path), NUM_THREADS=torch.get_num_threads(), USE_FP16=fp16)
    return XttsEngine.load(settings)


def _timed_stream(engine: XttsEngine, voice: Any, tokens: int) -> tuple[float, float]:
    """(time to first chunk, total) of the farm's engine streaming one sentence."""
    params = SynthesisParams(min_new_tokens=tokens, max_new_tokens=tokens, stream_chunk_size=CHUNK)
    started = time.perf_counter()
    first = None
    for _chunk in engine.synthesize_chunks(TEXT, "en", voice, params, seed=1):
        first = first or time.perf_counter() - started
        if engine.device == "cuda":
            torch.cuda.synchronize()
    return first or 0.0, time.perf_counter() - started


def _timed_coqui_stream(engine: XttsEngine, voice: Any, tokens: int) -> float:
    started = time.perf_counter()
    for _chunk in engine.model.inference_stream(
        TEXT,
        "en",
        voice.gpt_cond_latent,
        voice.speaker_embedding,
        stream_chunk_size=CHUNK,
        min_new_tokens=tokens,
        max_new_tokens=tokens,
        repetition_penalty=5.0,
    ):
        pass
    return time.perf_counter() - started


def _timed_one_shot(engine: XttsEngine, voice: Any, tokens: int) -> float:
    started = time.perf_counter()
    engine.model.inference(
        TEXT,
        "en",
        voice.gpt_cond_latent,
        voice.speaker_embedding,
        min_new_tokens=tokens,
        max_new_tokens=tokens,
        repetition_penalty=5.0,
    )
    return time.perf_counter() - started


@torch.inference_mode()
def _stream_fidelity(engine: XttsEngine, voice: Any, tokens: int) -> dict[str, float]:
    """Decode the same GPT latents streamed (as the engine does) and in one go; compare the audio."""
    torch.manual_seed(3)
    gpt = engine.model.gpt
    text_tokens = torch.IntTensor(engine.model.tokenizer.encode(TEXT.lower(), lang="en")).unsqueeze(0)
    generator = gpt.get_generator(
        fake_inputs=gpt.compute_embeddings(voice.gpt_cond_latent, text_tokens),
        do_sample=True,
        top_k=50,
        top_p=0.85,
        temperature=0.75,
        num_beams=1,
        num_return_sequences=1,
        output_hidden_states=True,
        return_dict_in_generate=True,
        min_new_tokens=tokens,
        max_new_tokens=tokens,
    )
    latents = torch.cat([latent for _token, latent in generator], dim=0)
    reference = one_shot(engine.model.hifigan_decoder, latents, voice.speaker_embedding)
    decoder = StreamingDecoder(engine.model.hifigan_decoder, voice.speaker_embedding)
    pieces, start, size = [], 0, CHUNK
    while start < len(latents):
        end = min(len(latents), start + size)
        pieces.append(decoder.push(latents[start:end], final=end == len(latents)))
        start, size = end, min(size * 2, CHUNK * MAX_CHUNK_GROWTH)
    streamed = torch.cat(pieces)
    joins = torch.cumsum(torch.tensor([len(p) for p in pieces[:-1]]), 0)
    near_joins = (
        torch.cat([torch.arange(j - 64, j + 64) for j in joins.tolist()])
        if len(joins)
        else torch.tensor([], dtype=torch.long)
    )
    return {
        "samples_equal": int(len(streamed) == len(reference)),
        "snr_db": round(snr_db(reference, streamed), 1),
        "max_abs_diff": float((reference - streamed).abs().max()),
        "max_abs_diff_at_joins": float((reference[near_joins] - streamed[near_joins]).abs().max())
        if len(near_joins)
        else 0.0,
        "joins": len(joins),
    }


def streaming(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    engine = _engine()
    voice = engine.builtin_voice(engine.speaker_names[0])
    _timed_stream(engine, voice, 20)  # warm-up
    repeats = {100: 1 if quick else 3, 300: 1 if quick else 2, 600: 1}
    rows, fidelity = [], {}
    for tokens, n in repeats.items():
        one, farm, coqui, first = [], [], [], []
        run_coqui = not (quick and tokens == 600)
        for _ in range(n):
            one.append(_timed_one_shot(engine, voice, tokens))
            ttfa, total = _timed_stream(engine, voice, tokens)
            farm.append(total)
            first.append(ttfa)
            if run_coqui:
                coqui.append(_timed_coqui_stream(engine, voice, tokens))
        one_shot_s = statistics.median(one)
        rows.append(
            {
                "tokens": tokens,
                "audio_s": round(tokens * 1024 / 22050, 1),
                "runs": n,
                "one_shot_s": one_shot_s,
                "farm_stream_s": statistics.median(farm),
                "farm_first_chunk_s": statistics.median(first),
                "coqui_stream_s": statistics.median(coqui) if coqui else None,
                "farm_ratio": statistics.median(f / o for f, o in zip(farm, one, strict=True)),
                "coqui_ratio": statistics.median(c / o for c, o in zip(coqui, one, strict=True)) if coqui else None,
            }
        )
        fidelity[tokens] = _stream_fidelity(engine, voice, tokens)
    notes = [
        f"streamed vs one-shot decoding of the same latents at {t} tokens: SNR {f['snr_db']} dB, "
        f"max |diff| {f['max_abs_diff']:.2e} ({f['max_abs_diff_at_joins']:.2e} within 64 samples of the "
        f"{f['joins']} joins), same length: {bool(f['samples_equal'])}"
        for t, f in fidelity.items()
    ]
    notes.append(
        f"model: small random-weight XTTS-v2 layout, {engine.device}, {torch.get_num_threads()} threads; "
        f"stream_chunk_size {CHUNK}; ratio = streamed total / one-shot `Xtts.inference()` total, median of paired runs"
    )
    return "Streaming cost: streamed total / one-shot total", rows, {"fidelity": fidelity, "notes": notes}


@torch.inference_mode()
def _step_ms(engine: XttsEngine, size: int, steps: int) -> float:
    """Median milliseconds of one step of the batched GPT (workers/batched_gpt.py) running `size` sequences."""
    gpt = engine.model.gpt
    voice = engine.builtin_voice(engine.speaker_names[0])
    assert voice is not None
    cond = voice.gpt_cond_latent.to(engine.device)
    text = torch.IntTensor(engine.model.tokenizer.encode(TEXT.lower(), lang="en"))[None].to(engine.device)
    batch = BatchedGPT(gpt, engine.device, autocast_fp16=engine.fp16)
    long_enough = Sampling(min_new_tokens=steps + 10, max_new_tokens=steps + 10)
    for i in range(size):
        batch.add(i, cond, text, long_enough, torch.Generator(device=engine.device).manual_seed(i))
    for _ in range(3):  # warm-up
        batch.step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        batch.step()
        if engine.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def batch_steps(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """One step of the batched GPT (one audio token for every sequence of the batch) by batch size: what batching
    saves per token is the step's time divided by the sequences it serves."""
    engine = _engine()
    steps = 20 if quick else 60
    rows = []
    for size in (1, 2, 4, 8, 16):
        ms = _step_ms(engine, size, steps)
        rows.append({"batch": size, "ms_per_step": ms, "ms_per_token": ms / size})
    notes = [
        f"model: small random-weight XTTS-v2 layout, {engine.device}, {torch.get_num_threads()} threads; "
        f"median of {steps} steps after 3 warm-up steps; ms_per_token = ms_per_step / batch"
    ]
    return "Batched GPT: step time by batch size", rows, {"notes": notes}


def _gpu_run(fp16: bool, tokens: int, streams: int, repeats: int) -> dict[str, Any]:
    engine = _engine(full_size=True, fp16=fp16)
    voice = engine.builtin_voice(engine.speaker_names[0])
    _timed_stream(engine, voice, 20)
    single = [_timed_stream(engine, voice, tokens) for _ in range(repeats)]
    audio_s = tokens * 1024 / 22050
    results: list[tuple[float, float]] = []
    threads = [
        threading.Thread(target=lambda: results.append(_timed_stream(engine, voice, tokens))) for _ in range(streams)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "dtype": "float16" if fp16 else "float32",
        "device": torch.cuda.get_device_name(0),
        "first_audio_s": statistics.median(s[0] for s in single),
        "rtf": statistics.median(s[1] for s in single) / audio_s,
        "concurrent_streams": streams,
        "concurrent_first_audio_s": statistics.median(r[0] for r in results),
        "concurrent_rtf_aggregate": wall / (streams * audio_s),
    }


def gpu(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    if not torch.cuda.is_available():
        return "GPU: full-size model", [], {"notes": ["no GPU on this machine: the GPU section was skipped"]}
    tokens, streams = 200, 4
    rows = []
    for fp16 in (False, True):
        rows.append(_gpu_run(fp16, tokens, streams, 1 if quick else 3))
        torch.cuda.empty_cache()
    notes = [
        f"{tokens} tokens ({tokens * 1024 / 22050:.1f} s of audio) per stream; RTF = synthesis seconds per audio second"
    ]
    return "GPU: full-size random-weight model", rows, {"notes": notes}
