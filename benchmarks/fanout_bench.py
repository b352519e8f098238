"""Fan-out (issue 22): how many listeners one API process holds, and what it adds to their audio's arrival.

One API process (API_PROCESSES=1, gevent, its default API_WORKER_CLASS) and no workers: a fake producer
(tools/fanout.py) writes each job's chunks as a worker does, faster than real time (0.5 s of audio every 0.4 s), and
notes when. Two crowds, one after the other:

- SSE: FANOUT_JOBS jobs (POST /jobs) with FANOUT_PER_JOB listeners each (GET /jobs/{id}/stream), all connected and
  waiting before any audio; the jobs then start one after another over FANOUT_SPREAD_S seconds, as a farm's jobs do.
- /tts_stream: FANOUT_STREAMS requests sent one after another over half FANOUT_SPREAD_S (125 requests a second),
  each job's chunks written as soon as its response's headers arrive; its streams (20 chunks, 8 s) last long enough
  for all to be held at once.

Per crowd: the listeners held at once, those that got their audio exactly, the added first-audio latency (a
listener's first chunk received less its writing) and every chunk's, p50 and p99; the API process's memory per
listener (RSS with the crowd connected and waiting, less before, over the listeners) and its CPU over the run.
Targets: 2 000 SSE listeners and 500 /tts_stream responses held, added first audio under 20 ms (p50) and 100 ms
(p99). The listeners run in this process (asyncio), on the same two cores as the API: their own parsing is inside
the figures.
"""

from __future__ import annotations

from typing import Any

from benchmarks.farm_bench import local_farm
from tools.fanout import FanoutResult, api_worker_pid, sse_fanout, tts_stream_fanout
from tools.localfarm import tts_body

FANOUT_JOBS, FANOUT_PER_JOB, FANOUT_SPREAD_S = 200, 10, 8.0
FANOUT_STREAMS = 500
QUICK_JOBS, QUICK_PER_JOB, QUICK_SPREAD_S, QUICK_STREAMS = 50, 10, 2.0, 100
TARGET_P50_MS, TARGET_P99_MS = 20.0, 100.0
# No worker here, so no read block wakes a listener early: the settings' own block (the test farms use 200 ms).
FANOUT_ENV = {"STREAM_READ_BLOCK_MS": "1000", "MAX_JOBS_PER_TENANT": "10000", "MAX_QUEUED_SEGMENTS": "100000"}


def _note(name: str, result: FanoutResult, wanted: int) -> str:
    row = result.row(name)
    p50, p99 = row["first audio +ms p50"], row["first audio +ms p99"]
    met = (
        result.held >= wanted
        and result.complete == wanted
        and p50 is not None
        and p99 is not None
        and p50 < TARGET_P50_MS
        and p99 < TARGET_P99_MS
    )
    return (
        f"{name}: {result.held} of {wanted} held at once, {result.complete} complete and exact; added first audio "
        f"p50 {p50} ms, p99 {p99} ms (targets < {TARGET_P50_MS:g} / < {TARGET_P99_MS:g}); "
        f"{row['KiB per listener']} KiB per listener: {'met' if met else 'NOT met'}"
    )


def fanout(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    jobs = QUICK_JOBS if quick else FANOUT_JOBS
    per_job = QUICK_PER_JOB if quick else FANOUT_PER_JOB
    spread = QUICK_SPREAD_S if quick else FANOUT_SPREAD_S
    streams = QUICK_STREAMS if quick else FANOUT_STREAMS
    body = tts_body("Listen to this", 20)
    with local_farm(workers=0, threads_per_worker=1, extra_env=FANOUT_ENV) as farm:
        assert farm.api is not None
        pid = api_worker_pid(farm.api.pid)
        sse_fanout(farm.base_url, farm.redis_url, pid, jobs=5, per_job=2, chunks=2, spread=0.5, body=body)  # warm-up
        sse = sse_fanout(
            farm.base_url, farm.redis_url, pid, jobs=jobs, per_job=per_job, chunks=4, spread=spread, body=body
        )
        tts = tts_stream_fanout(
            farm.base_url, farm.redis_url, pid, streams=streams, chunks=20, spread=spread / 2, body=body
        )
    rows = [sse.row("SSE listeners"), tts.row("/tts_stream responses")]
    notes = [_note("SSE", sse, jobs * per_job), _note("/tts_stream", tts, streams)]
    errors = (sse.errors + tts.errors)[:10]
    if errors:
        notes.append(f"errors: {errors}")
    extra = {
        "notes": notes,
        "sse": {"refused": sse.refused, "errors": sse.errors},
        "tts_stream": {"refused": tts.refused, "errors": tts.errors},
    }
    return "Fan-out: listeners on one API process", rows, extra
