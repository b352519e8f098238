"""Benchmarks through the whole farm: real API (gunicorn), Celery workers, Redis and SQLite, over HTTP."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from tools.localfarm import DEV_SPEAKER, Farm, RedisServer, migrate, tts_body
from workers import devmodel

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / ".cache" / "bench-models"
SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)


@contextmanager
def local_farm(workers: int, threads_per_worker: int, extra_env: dict[str, str] | None = None) -> Iterator[Farm]:
    devmodel.ensure_checkpoint(MODELS / "dev")
    with tempfile.TemporaryDirectory(prefix="xtts-bench-") as tmp:
        redis_server = RedisServer().start()
        database = f"sqlite:///{tmp}/bench.db"
        migrate(database)
        farm = Farm(
            redis_url=redis_server.url,
            database_url=database,
            model_dir=MODELS,
            workers=workers,
            log_dir=Path(tmp),
            extra_env={"NUM_THREADS": str(threads_per_worker), "STREAM_READ_BLOCK_MS": "1000", **(extra_env or {})},
        )
        try:
            yield farm.start()
        finally:
            farm.stop()
            redis_server.cleanup()


def _body(text: str, tokens: int, chunk: int = 20) -> dict[str, Any]:
    return tts_body(text, tokens, chunk, DEV_SPEAKER)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def stream(farm: Farm, body: dict[str, Any]) -> dict[str, Any]:
    """POST /tts_stream; time to the first audio byte and to the end, as the client sees them."""
    started = time.perf_counter()
    first = None
    size = 0
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=900) as response:
        response.raise_for_status()
        for piece in response.iter_content(chunk_size=None):
            size += len(piece)
            if first is None and size > 44:
                first = time.perf_counter() - started
        job_id = response.headers["X-Session-Id"]
    return {
        "job_id": job_id,
        "first_audio_s": first,
        "total_s": time.perf_counter() - started,
        "audio_s": (size - 44) / 2 / 24000,
    }


def pipeline(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    runs = 5 if quick else 15
    body = _body("Hello, this is a short sentence for timing the pipeline.", 40)
    samples = []
    with local_farm(workers=1, threads_per_worker=2) as farm:
        stream(farm, body)  # warm-up
        for _ in range(runs):
            result = stream(farm, body)
            job = farm.job(result["job_id"])
            stamps = job["timestamps"]
            worker_first = _ts(stamps["first_chunk"]) - _ts(stamps["started"])
            samples.append(
                {
                    "client": result["first_audio_s"],
                    "worker": worker_first,
                    "queue": _ts(stamps["started"]) - _ts(stamps["queued"]),
                }
            )
    client = statistics.median(s["client"] for s in samples)
    worker = statistics.median(s["worker"] for s in samples)
    overhead_ms = statistics.median((s["client"] - s["worker"]) * 1000 for s in samples)
    rows = [
        {
            "runs": runs,
            "client_first_audio_ms": client * 1000,
            "worker_first_chunk_ms": worker * 1000,
            "ratio": client / worker,
            "overhead_ms_median": overhead_ms,
            "queued_to_started_ms": statistics.median(s["queue"] for s in samples) * 1000,
        }
    ]
    notes = [
        "client: POST /tts_stream until the first PCM byte after the WAV header; worker: task start (SQL "
        "started_at) to the first chunk published (first_chunk_at); overhead = their difference, per request"
    ]
    return "Pipeline: time to first audio through the API vs the worker's own", rows, {"notes": notes}


def _throughput_run(farm: Farm, jobs: int, tokens: int) -> float:
    def one(i: int) -> dict[str, Any]:
        return stream(farm, _body(f"Concurrent request number {i}.", tokens))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, range(jobs)))
    wall = time.perf_counter() - started
    return float(sum(r["audio_s"] for r in results)) / wall


def throughput(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    jobs, tokens = (4, 40) if quick else (8, 60)
    rows = []
    for workers in (1, 2):
        with local_farm(workers=workers, threads_per_worker=1) as farm:
            _throughput_run(farm, workers, 10)  # warm-up every worker
            runs = [_throughput_run(farm, jobs, tokens) for _ in range(1 if quick else 3)]
        rows.append(
            {
                "workers": workers,
                "concurrent_requests": jobs,
                "tokens_each": tokens,
                "audio_s_per_wall_s": statistics.median(runs),
            }
        )
    ratio = rows[1]["audio_s_per_wall_s"] / rows[0]["audio_s_per_wall_s"]
    for row in rows:
        row["vs_1_worker"] = row["audio_s_per_wall_s"] / rows[0]["audio_s_per_wall_s"]
    notes = [f"2 workers produce {ratio:.2f}x the audio per second of 1 (one worker per CPU core, NUM_THREADS=1 each)"]
    return "Throughput under concurrent requests", rows, {"notes": notes, "ratio_2_vs_1": ratio}


def longtext(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    sentences, tokens = (4, 30) if quick else (8, 40)
    long_body = _body(" ".join([SENTENCE] * sentences), tokens)
    short_body = _body("Short question?", 10)
    rows, fairness = [], {}
    for workers in (1, 2):
        with local_farm(workers=workers, threads_per_worker=1) as farm:
            stream(farm, short_body)
            result = stream(farm, long_body)
            rows.append(
                {
                    "workers": workers,
                    "segments": sentences,
                    "audio_s": result["audio_s"],
                    "first_audio_s": result["first_audio_s"],
                    "total_s": result["total_s"],
                }
            )
            if workers == 2:
                idle = [stream(farm, short_body)["first_audio_s"] for _ in range(3)]
                busy = []
                for _ in range(1 if quick else 3):
                    job = requests.post(farm.url("/jobs"), json=long_body, timeout=30).json()
                    while farm.job(job["id"])["progress"]["chunks"] == 0:
                        time.sleep(0.05)
                    busy.append(stream(farm, short_body)["first_audio_s"])
                    requests.delete(farm.url(f"/jobs/{job['id']}"), timeout=30)
                fairness = {
                    "short_first_audio_idle_s": statistics.median(idle),
                    "short_first_audio_during_long_job_s": statistics.median(busy),
                }
    speedup = rows[0]["total_s"] / rows[1]["total_s"]
    for row in rows:
        row["speedup"] = rows[0]["total_s"] / row["total_s"]
    segment_time = rows[0]["total_s"] / sentences
    notes = [
        f"a text of {sentences} segments finishes {speedup:.2f}x faster on 2 workers than on 1",
        f"short job, time to first audio: {fairness['short_first_audio_idle_s']:.2f} s on an idle farm, "
        f"{fairness['short_first_audio_during_long_job_s']:.2f} s while a long job keeps every worker busy "
        f"(one segment of that long job takes {segment_time:.2f} s on one worker)",
    ]
    return "Long text across workers", rows, {"notes": notes, **fairness, "speedup_2_vs_1": speedup}
