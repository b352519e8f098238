"""Many listeners on one worker process: continuous batching (`WORKER_MAX_BATCH`) against one segment at a
time (`WORKER_MAX_BATCH=1`), through the whole farm (gunicorn API, Celery, Redis, SQLite), over HTTP.

Every ratio compares figures measured in the same run, on the same machine, with the same checkpoint.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from benchmarks.farm_bench import MODELS, ROOT, SENTENCE, local_farm, stream
from tools.localfarm import tts_body
from workers import devmodel

TOKENS = 100
CHUNK = 20
TEXTS = [f"Listener number {i} asked the farm to read this sentence aloud." for i in range(64)]


def _body(text: str, tokens: int = TOKENS) -> dict[str, Any]:
    return tts_body(text, tokens, CHUNK)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def burst(farm: Any, n: int, tokens: int = TOKENS) -> dict[str, Any]:
    """n concurrent /tts_stream requests: first audio (median, p95), aggregate audio per wall second, and the
    slowest stream's audio per wall second (below 1: that listener's playback would stall)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: stream(farm, _body(TEXTS[i % len(TEXTS)], tokens)), range(n)))
    wall = time.perf_counter() - started
    firsts = [r["first_audio_s"] for r in results]
    return {
        "streams": n,
        "first_audio_median_s": statistics.median(firsts),
        "first_audio_p95_s": _p95(firsts),
        "aggregate_audio_per_wall_s": sum(r["audio_s"] for r in results) / wall,
        "slowest_stream_audio_per_wall_s": min(r["audio_s"] / r["total_s"] for r in results),
    }


def _compare(batched: dict[str, Any], single: dict[str, Any], lone: float) -> dict[str, Any]:
    return {
        **batched,
        "first_audio_vs_lone": batched["first_audio_median_s"] / lone,
        "aggregate_vs_unbatched": batched["aggregate_audio_per_wall_s"] / single["aggregate_audio_per_wall_s"],
    }


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    # Counts (the number of streams) are the same in every round; figures are medians.
    return {
        key: statistics.median(run[key] for run in runs) if isinstance(value, float) else value
        for key, value in runs[0].items()
    }


def _paired_runs(
    counts: tuple[int, ...], batch: int, extra: dict[str, str], tokens: int, rounds: int
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The same bursts against an unbatched and a batched farm, both up at once and taken in turns, so that whatever
    else loads the machine weighs on both sides of every ratio alike. Medians over `rounds`."""
    env = {"MAX_CONCURRENT_REQUESTS": "64", **extra}
    with (
        local_farm(workers=1, threads_per_worker=2, extra_env={**env, "WORKER_MAX_BATCH": "1"}) as single_farm,
        local_farm(workers=1, threads_per_worker=2, extra_env={**env, "WORKER_MAX_BATCH": str(batch)}) as batched_farm,
    ):
        burst(single_farm, 1, 20)  # warm-up
        burst(batched_farm, 1, 20)
        single: dict[int, dict[str, Any]] = {}
        batched: dict[int, dict[str, Any]] = {}
        for n in counts:
            single_runs, batched_runs = [], []
            for _ in range(rounds):
                single_runs.append(burst(single_farm, n, tokens))
                batched_runs.append(burst(batched_farm, n, tokens))
            single[n], batched[n] = _median_runs(single_runs), _median_runs(batched_runs)
        return single, batched


def dev_model(quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    counts = (1, 4, 8) if quick else (1, 4, 8, 16)
    batch = 8 if quick else 16
    single, batched = _paired_runs(counts, batch, {}, TOKENS, rounds=1 if quick else 2)
    lone = batched[1]["first_audio_median_s"]
    rows = []
    for n in counts:
        rows.append({"worker": "WORKER_MAX_BATCH=1", **single[n]})
        rows.append({"worker": f"WORKER_MAX_BATCH={batch}", **_compare(batched[n], single[n], lone)})
    four = _compare(batched[4], single[4], lone)
    notes = [
        f"dev model, 4 concurrent streams: first-audio median {four['first_audio_vs_lone']:.2f}x a lone stream's "
        f"(target <= 2.5; unbatched: {single[4]['first_audio_median_s'] / single[1]['first_audio_median_s']:.2f}x), "
        f"aggregate audio/wall {four['aggregate_vs_unbatched']:.2f}x the unbatched worker's (target >= 1)",
    ]
    return rows, notes


def full_size(quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    path = MODELS / "full"
    if not devmodel.is_complete(path):
        subprocess.run(
            [sys.executable, "-m", "workers.devmodel", "--out", str(path), "--full-size"], cwd=ROOT, check=True
        )
    tokens = 30 if quick else 50
    extra = {"CUSTOM_MODEL_PATH": str(path)}
    single, batched = _paired_runs((1, 4), 4, extra, tokens, rounds=1 if quick else 2)
    rows = [
        {"worker": "full-size, WORKER_MAX_BATCH=1", **single[1]},
        {"worker": "full-size, WORKER_MAX_BATCH=4", **batched[1]},
        {"worker": "full-size, WORKER_MAX_BATCH=1", **single[4]},
        {
            "worker": "full-size, WORKER_MAX_BATCH=4",
            **_compare(batched[4], single[4], batched[1]["first_audio_median_s"]),
        },
    ]
    ratio = batched[4]["aggregate_audio_per_wall_s"] / single[4]["aggregate_audio_per_wall_s"]
    return rows, [
        f"full-size random checkpoint on the CPU, 4 concurrent streams of {tokens} tokens: aggregate "
        f"audio/wall {ratio:.2f}x the unbatched worker's (target >= 1.8)"
    ]


def short_during_long(quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """A short request's first audio on an idle farm, and while a long text occupies the only worker."""
    long_body = _body(" ".join([SENTENCE] * (4 if quick else 8)), 100)
    short = _body("Short question?", 20)
    repeats = 2 if quick else 3
    rows = []
    for batch in (1, 4):
        with local_farm(workers=1, threads_per_worker=2, extra_env={"WORKER_MAX_BATCH": str(batch)}) as farm:
            stream(farm, short)
            idle = [stream(farm, short)["first_audio_s"] for _ in range(repeats)]
            busy = []
            for _ in range(repeats):
                job = requests.post(farm.url("/jobs"), json=long_body, timeout=30).json()
                while farm.job(job["id"])["progress"]["chunks"] < 2:
                    time.sleep(0.05)
                busy.append(stream(farm, short)["first_audio_s"])
                requests.delete(farm.url(f"/jobs/{job['id']}"), timeout=30)
            rows.append(
                {
                    "worker": f"WORKER_MAX_BATCH={batch}",
                    "idle_first_audio_s": statistics.median(idle),
                    "busy_first_audio_s": statistics.median(busy),
                    "busy_vs_idle": statistics.median(busy) / statistics.median(idle),
                }
            )
    return rows, [
        f"a short request while a long text occupies the worker: first audio {rows[1]['busy_vs_idle']:.2f}x "
        f"its idle first audio with batching (target <= 1.5), {rows[0]['busy_vs_idle']:.2f}x without"
    ]


def concurrency(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    rows, notes = dev_model(quick)
    fair_rows, fair_notes = short_during_long(quick)
    full_rows, full_notes = full_size(quick)
    extra = {"fairness": fair_rows, "full_size": full_rows, "notes": notes + fair_notes + full_notes}
    return "Concurrency: one worker process, batched vs one segment at a time", rows + full_rows, extra
