"""Benchmarks of the engine in this process: streaming cost against one-shot synthesis, the batched GPT's step time
by batch size, and the GPU runs."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import listener
from shared.params import SynthesisParams
from shared.settings import Settings
from workers import devmodel
from workers.batched_gpt import BatchedGPT, Sampling
from workers.engine import VoiceLatents, XttsEngine, exact_float32
from workers.scheduler import MAX_CHUNK_GROWTH, BatchScheduler
from workers.stream_decoder import StreamingDecoder, one_shot, snr_db

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / ".cache" / "bench-models"
TEXT = "The farm streams speech while it is still being generated, and this sentence is what it says."
CHUNK = 20


def _engine(full_size: bool = False, fp16: bool = False) -> XttsEngine:
    path = devmodel.ensure_checkpoint(MODELS / ("full" if full_size else "dev"), full_size=full_size)
    settings = Settings(CUSTOM_MODEL_PATH=str(path), NUM_THREADS=torch.get_num_threads(), USE_FP16=fp16)
    return XttsEngine.load(settings)


def dev_engine() -> XttsEngine:
    """The small random-weight checkpoint, loaded on the machine's device (a GPU when there is one)."""
    return _engine()


def model_voice(engine: XttsEngine) -> VoiceLatents:
    """The first built-in voice, on the engine's device (coqui's `inference` and the GPT take their inputs there)."""
    found = engine.builtin_voice(engine.speaker_names[0])
    assert found is not None
    return found.to(engine.device)


def text_tokens(engine: XttsEngine, text: str) -> torch.Tensor:
    """XTTS text token ids [1, T] of an English text, on the engine's device."""
    return torch.IntTensor(engine.model.tokenizer.encode(text.lower(), lang="en")).unsqueeze(0).to(engine.device)


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
    generator = gpt.get_generator(
        fake_inputs=gpt.compute_embeddings(voice.gpt_cond_latent, text_tokens(engine, TEXT)),
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
    exact_float32()  # the fidelity figures compare float32 decodings down to rounding: no TF32 on a GPU
    engine = _engine()
    voice = model_voice(engine)
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


# The `gpu` section: how many listeners one worker process serves on a GPU with the full-size checkpoint.
GPU_STREAMS = (1, 8, 16, 32, 64)
GPU_TOKENS = 150  # about 7 s of audio per stream
# GPU_BENCH_REHEARSE=1 runs the same code on the CPU with the dev model and tiny sizes (scripts/gpu_check.sh
# --rehearse), so the first GPU minutes are not spent finding this section's own bugs.
REHEARSAL_STREAMS = (1, 2)
REHEARSAL_TOKENS = 8


def gpu_texts(count: int) -> list[str]:
    return [f"Listener number {i} asked the farm to read this sentence aloud." for i in range(count)]


def gpu_streams(
    engine: XttsEngine, fp16: bool, streams: int, tokens: int, max_batch: int | None = None
) -> dict[str, Any]:
    """`streams` segments submitted at once to one scheduler (batch `max_batch`, default `streams`) on its own
    thread: first audio, stall of a real-time listener, aggregate real-time factor."""
    scheduler = BatchScheduler(
        engine.model, engine.device, max_batch or streams, fp16=fp16, decode_context=engine.decode_context
    )
    params = SynthesisParams(min_new_tokens=tokens, max_new_tokens=tokens, stream_chunk_size=CHUNK)
    segments = [
        engine.segment(i, text, "en", model_voice(engine), params, seed=i) for i, text in enumerate(gpu_texts(streams))
    ]
    records, wall = listener.run_streams(scheduler, segments)
    return {"dtype": "float16" if fp16 else "float32", **listener.summary(records, wall)}


def gpu(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    rehearsal = os.environ.get("GPU_BENCH_REHEARSE") == "1"
    if not torch.cuda.is_available() and not rehearsal:
        return "GPU: full-size model", [], {"notes": ["no GPU on this machine: the GPU section was skipped"]}
    counts = REHEARSAL_STREAMS if rehearsal else GPU_STREAMS
    tokens = REHEARSAL_TOKENS if rehearsal else GPU_TOKENS
    engine = _engine(full_size=not rehearsal)
    device = torch.cuda.get_device_name(0) if engine.device == "cuda" else "cpu (rehearsal)"
    rows = []
    for fp16 in (False, True):
        gpu_streams(engine, fp16, 1, min(tokens, 20))  # warm-up (CUDA kernels, allocator)
        for streams in counts:
            if engine.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row = {"device": device, **gpu_streams(engine, fp16, streams, tokens)}
            if engine.device == "cuda":
                row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            rows.append(row)
            if engine.device == "cuda":
                torch.cuda.empty_cache()
    most = {
        dtype: max(
            (r["streams"] for r in rows if r["dtype"] == dtype and r["streams_without_stall"] == r["streams"]),
            default=0,
        )
        for dtype in ("float32", "float16")
    }
    notes = [
        f"{'dev model, CPU rehearsal' if rehearsal else 'full-size random-weight checkpoint'}; {tokens} tokens "
        f"({tokens * 1024 / 22050:.1f} s of audio) per stream, all submitted at once to one scheduler (batch = "
        "streams) on its own thread; stall = a real-time listener's total wait after its first audio; aggregate RTF "
        "= wall seconds per second of audio, all streams together",
        "most streams with zero stall for every listener: " + ", ".join(f"{dtype} {n}" for dtype, n in most.items()),
    ]
    return "GPU: streams through one worker's scheduler", rows, {"most_streams_without_stall": most, "notes": notes}
