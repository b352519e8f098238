"""The GPU smoke of scripts/gpu_check.sh: the dev model through the worker's own scheduler, float32 and float16.

For each precision: one segment alone; 40 segments at a batch of 32, run by the scheduler's own thread with one
consumer thread per segment (as a worker runs them); a few of those segments again alone, compared with their
batched run (tokens, audio SNR). Every published chunk must be finite and on the CPU. Peak memory is reported.
`--rehearse`: the same on the CPU with tiny sizes. Writes smoke.json into --out; exits 1 when a check fails.

    python -m benchmarks.gpu_smoke --out RESULTS [--rehearse]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import listener, model_bench
from shared.params import SynthesisParams
from workers.engine import XttsEngine
from workers.scheduler import BatchScheduler, Segment
from workers.stream_decoder import snr_db


@dataclass(frozen=True)
class Sizes:
    segments: int
    max_batch: int
    tokens: int
    compared: int  # segments also run alone


GPU_SIZES = Sizes(segments=40, max_batch=32, tokens=60, compared=4)
REHEARSAL_SIZES = Sizes(segments=6, max_batch=4, tokens=8, compared=2)
MIN_IDENTICAL_TOKENS = 0.9  # float32, batched vs alone (tests/test_batched_gpt.py asserts the same)


def _segments(engine: XttsEngine, sizes: Sizes) -> list[Segment]:
    params = SynthesisParams(min_new_tokens=sizes.tokens, max_new_tokens=sizes.tokens, stream_chunk_size=8)
    voice = model_bench.model_voice(engine)
    texts = model_bench.gpu_texts(sizes.segments)
    return [engine.segment(i, text, "en", voice, params, seed=i) for i, text in enumerate(texts)]


def _run(engine: XttsEngine, fp16: bool, max_batch: int, segments: list[Segment]) -> list[listener.StreamRecord]:
    scheduler = BatchScheduler(engine.model, engine.device, max_batch, fp16=fp16, decode_context=engine.decode_context)
    records, _wall = listener.run_streams(scheduler, segments, keep_audio=True)
    return records


def _checks(records: list[listener.StreamRecord], tokens: int) -> dict[str, Any]:
    return {
        "segments": len(records),
        "errors": [r.error for r in records if r.error],
        "all_tokens": all(len(r.tokens) == tokens for r in records),
        "chunks_finite": all(r.finite for r in records),
        "chunks_on_cpu": all(r.on_cpu for r in records),
        "first_audio_p50_s": sorted(r.first_audio_s for r in records)[len(records) // 2],
    }


def _passed(checks: dict[str, Any]) -> bool:
    return not checks["errors"] and checks["all_tokens"] and checks["chunks_finite"] and checks["chunks_on_cpu"]


def _compare(batched: list[listener.StreamRecord], alone: list[listener.StreamRecord]) -> dict[str, Any]:
    same = sum(a == b for x, y in zip(batched, alone, strict=True) for a, b in zip(x.tokens, y.tokens, strict=True))
    total = sum(len(x.tokens) for x in alone)
    snrs = [
        snr_db(torch.cat(y.audio), torch.cat(x.audio))
        for x, y in zip(batched, alone, strict=True)
        if x.tokens == y.tokens and x.audio and y.audio
    ]
    finite_snrs = [s for s in snrs if math.isfinite(s)]
    return {
        "compared": len(alone),
        "tokens_identical_fraction": same / total if total else 0.0,
        "segments_with_identical_tokens": len(snrs),
        "min_snr_db": min(finite_snrs) if finite_snrs else (math.inf if snrs else None),
    }


def _peak_memory_mib(device: str) -> int:
    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # the process's peak RSS (KiB on Linux)


def smoke(engine: XttsEngine, sizes: Sizes) -> dict[str, Any]:
    segments = _segments(engine, sizes)
    runs = []
    for fp16 in (False, True):
        if engine.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        one = _checks(_run(engine, fp16, 1, segments[:1]), sizes.tokens)
        batched_records = _run(engine, fp16, sizes.max_batch, segments)
        batch = _checks(batched_records, sizes.tokens)
        alone = [_run(engine, fp16, 1, [segment])[0] for segment in segments[: sizes.compared]]
        comparison = _compare(batched_records[: sizes.compared], alone)
        ok = _passed(one) and _passed(batch)
        if not fp16:  # float16 rounds differently batched and alone: reported, not required
            ok = ok and comparison["tokens_identical_fraction"] >= MIN_IDENTICAL_TOKENS
        runs.append(
            {
                "dtype": "float16" if fp16 else "float32",
                "ok": ok,
                "one_segment": one,
                "batch": {**batch, "max_batch": sizes.max_batch},
                "batched_vs_alone": comparison,
                "peak_memory_mib": _peak_memory_mib(engine.device),
            }
        )
    return {
        "device": torch.cuda.get_device_name(0) if engine.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "sizes": sizes.__dict__,
        "runs": runs,
        "ok": all(run["ok"] for run in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rehearse", action="store_true", help="on the CPU, tiny sizes")
    ns = parser.parse_args(argv)
    if not ns.rehearse and not torch.cuda.is_available():
        print("no CUDA device: run with --rehearse for the CPU rehearsal", file=sys.stderr)
        return 2
    engine = model_bench.dev_engine()
    result = smoke(engine, REHEARSAL_SIZES if ns.rehearse else GPU_SIZES)
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "smoke.json").write_text(json.dumps(result, indent=2))
    for run in result["runs"]:
        batch, comparison = run["batch"], run["batched_vs_alone"]
        print(
            f"{run['dtype']}: ok={run['ok']}; {batch['segments']} segments at batch {batch['max_batch']}: errors "
            f"{len(batch['errors'])}, finite {batch['chunks_finite']}, on CPU {batch['chunks_on_cpu']}; batched vs "
            f"alone: tokens {comparison['tokens_identical_fraction']:.3f} identical, min SNR "
            f"{comparison['min_snr_db']} dB; peak {run['peak_memory_mib']} MiB"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
