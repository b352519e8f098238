"""What a listener hears (issue 18): live streams played by a real-time listener (benchmarks/player.py) against a
farm of 2 workers of one torch thread each, dev model, through the whole farm over HTTP.

1. Capacity: the largest number of concurrent identical live streams (`/tts_stream`, pcm) that all play with zero
   stall (under 0.1 s each) and start within FIRST_AUDIO_FACTOR times a lone stream's first audio, found by
   doubling (1, 2, 4, ...) up to the first count that fails, then bisecting between the two.
2. Live load at 0.5x, 1x, 2x and 4x that capacity, all streams sent at once: first audio p50/p95, the share of
   admitted streams with zero stall, stall p95, refusals (any answer but 200). Again on a second farm with the
   scheduling off (OFF_ENV: never refused, every worker takes live streams up to its whole batch).
3. Bulk and live: a bulk job (`POST /jobs`, 40 sentences) under way while live texts of 4 sentences arrive at 1x
   capacity: the live streams against the same live load on an idle farm, and the bulk job's audio per wall second
   over that window against the bulk job alone over a window as long. Twice: scheduling "on" (the job sent as
   `"priority": "bulk"`) and "off" (the same job sent as `"priority": "live"`: one class, one queue, no pausing).

Sizes come from the environment (REALTIME_*, see `Sizes`), so that a smoke run takes a few minutes. Targets are
printed as ratios measured in this one run, with PASS/FAIL; nothing here asserts them.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import requests

from benchmarks.concurrency_bench import TEXTS, _p95
from benchmarks.farm_bench import SENTENCE, local_farm
from benchmarks.player import CONTINUITY_LIMIT_S, Playback, pcm_seconds, play
from shared.settings import Settings
from tools.localfarm import Farm, tts_body, wait_for

WORKERS = 2
CHUNK = 20
# A count of streams is within capacity only if they also start in time: streams waiting for a batch slot do not
# stall (playback starts at their first audio), they start late.
FIRST_AUDIO_FACTOR = 3.0
MULTIPLES = (0.5, 1.0, 2.0, 4.0)
# The API's own limit on concurrent requests (a 429 past it) is raised out of the way, so that the refusals counted
# are the farm's answer to its capacity (503 past MAX_LIVE_WAIT_SECONDS, at its default: the test farms turn it off),
# not the API's.
FARM_ENV = {
    "MAX_CONCURRENT_REQUESTS": "64",
    "MAX_LIVE_WAIT_SECONDS": str(Settings.model_fields["MAX_LIVE_WAIT_SECONDS"].default),
    "WORKER_LIVE_CAPACITY": "0",  # measured, as in production
}
# The live-only cases again with this scheduling off: never refused (MAX_LIVE_WAIT_SECONDS 0), and every worker
# takes live streams up to its whole batch (capacity pinned to the CPU's default batch of 4), which never shrinks:
# every admitted stream slows down together, as before issue 18.
OFF_ENV = {**FARM_ENV, "MAX_LIVE_WAIT_SECONDS": "0", "WORKER_LIVE_CAPACITY": "4", "WORKER_MAX_BATCH": "4"}


@dataclass(frozen=True)
class Sizes:
    stream_tokens: int  # audio tokens of each live stream of the capacity cases (100 = 4.6 s of audio)
    sentence_tokens: int  # audio tokens of each sentence of the live texts and of the bulk job
    live_sentences: int
    bulk_sentences: int
    max_streams: int  # the capacity search stops here
    multiples: tuple[float, ...]

    @classmethod
    def from_env(cls, quick: bool) -> Sizes:
        def number(name: str, default: int) -> int:
            return int(os.environ.get(f"REALTIME_{name}", default))

        multiples = os.environ.get("REALTIME_MULTIPLES")
        return cls(
            stream_tokens=number("STREAM_TOKENS", 60 if quick else 100),
            sentence_tokens=number("SENTENCE_TOKENS", 30 if quick else 60),
            live_sentences=number("LIVE_SENTENCES", 4),
            bulk_sentences=number("BULK_SENTENCES", 40),
            max_streams=number("MAX_STREAMS", 16 if quick else 64),
            multiples=tuple(float(m) for m in multiples.split(",")) if multiples else MULTIPLES,
        )


# --- one listener --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Listened:
    status: int
    playback: Playback | None  # None when refused
    retry_after: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            **(asdict(self.playback) if self.playback else {}),
        }


def listen(farm: Farm, body: dict[str, Any]) -> Listened:
    """POST /tts_stream (pcm) and play what arrives, as it arrives."""
    started = time.perf_counter()
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=900) as response:
        if response.status_code != 200:
            return Listened(response.status_code, None, response.headers.get("Retry-After"))
        arrivals = [
            (time.perf_counter() - started, pcm_seconds(len(piece))) for piece in response.iter_content(chunk_size=None)
        ]
    return Listened(200, play(arrivals))


def crowd(farm: Farm, bodies: list[dict[str, Any]]) -> tuple[list[Listened], float]:
    """Every body sent at once, each by its own listener; and the wall time until the last one ended."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        heard = list(pool.map(lambda body: listen(farm, body), bodies))
    return heard, time.perf_counter() - started


def summary(heard: list[Listened], wall: float) -> dict[str, Any]:
    played = [h.playback for h in heard if h.playback is not None]
    firsts = [p.first_audio_s for p in played if p.first_audio_s is not None]
    stalls = [p.stall_s for p in played]
    return {
        "streams": len(heard),
        "refused": len(heard) - len(played),
        "first_audio_p50_s": statistics.median(firsts) if firsts else None,
        "first_audio_p95_s": _p95(firsts) if firsts else None,
        "zero_stall_share": sum(p.continuous for p in played) / len(played) if played else None,
        "stall_p95_s": _p95(stalls) if stalls else None,
        "stall_max_s": max(stalls) if stalls else None,
        "live_audio_s": sum(p.audio_s for p in played),
        "wall_s": wall,
    }


def _stream_bodies(n: int, tokens: int) -> list[dict[str, Any]]:
    return [tts_body(TEXTS[i % len(TEXTS)], tokens, CHUNK, response_format="pcm") for i in range(n)]


def _text_bodies(n: int, sizes: Sizes) -> list[dict[str, Any]]:
    text = " ".join([SENTENCE] * sizes.live_sentences)  # one segment per sentence (farm_bench.SENTENCE)
    return [tts_body(text, sizes.sentence_tokens, CHUNK, response_format="pcm") for _ in range(n)]


# --- capacity ------------------------------------------------------------------------------------------------------
def within_capacity(result: dict[str, Any], first_audio_limit: float) -> bool:
    return (
        result["refused"] == 0
        and result["zero_stall_share"] == 1.0
        and result["first_audio_p95_s"] is not None
        and result["first_audio_p95_s"] <= first_audio_limit
    )


def measure_capacity(farm: Farm, sizes: Sizes) -> tuple[int, list[dict[str, Any]], float]:
    """Doubling, then bisection between the last count that passed and the first that failed. Returns the capacity
    (0: not even one stream plays without a stall), every probe (the first: a lone stream), and the first-audio
    limit used."""
    lone = summary(*crowd(farm, _stream_bodies(1, sizes.stream_tokens)))
    limit = FIRST_AUDIO_FACTOR * (lone["first_audio_p50_s"] or 1.0)
    probes: list[dict[str, Any]] = [{"case": "lone stream (sets the first-audio limit)", **lone}]

    def probe(n: int) -> bool:
        result = summary(*crowd(farm, _stream_bodies(n, sizes.stream_tokens)))
        passed = within_capacity(result, limit)
        probes.append({"case": f"capacity probe: {n} streams", **result, "within_capacity": passed})
        return passed

    passed, failed = 0, None
    n = 1
    while n <= sizes.max_streams:
        if not probe(n):
            failed = n
            break
        passed, n = n, 2 * n
    while failed is not None and failed - passed > 1:
        middle = (passed + failed) // 2
        if probe(middle):
            passed = middle
        else:
            failed = middle
    return passed, probes, limit


def live_cases(
    farm: Farm, sizes: Sizes, unit: int, label: str = ""
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    rows, streams = [], {}
    for multiple in sizes.multiples:
        n = max(1, round(multiple * unit))
        heard, wall = crowd(farm, _stream_bodies(n, sizes.stream_tokens))
        case = f"{label}live {multiple:g}x capacity"
        rows.append({"case": case, **summary(heard, wall), "multiple": multiple})
        streams[case] = [h.row() for h in heard]
    return rows, streams


# --- bulk and live -------------------------------------------------------------------------------------------------
class ProgressLog:
    """Polls a job's progress (audio seconds published) in a thread, so that the audio made in any window can be
    read afterwards."""

    def __init__(self, farm: Farm, job_id: str) -> None:
        self.farm, self.job_id = farm, job_id
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProgressLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            progress = self.farm.job(self.job_id)["progress"]
            self.samples.append((time.perf_counter(), progress["audio_seconds"]))

    def audio_at(self, moment: float) -> float:
        """Audio published by `moment`, interpolated between the two polls around it."""
        before = [s for s in self.samples if s[0] <= moment] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= moment] or self.samples[-1:]
        (t0, a0), (t1, a1) = before[-1], after[0]
        return a0 if t1 == t0 else a0 + (a1 - a0) * (moment - t0) / (t1 - t0)


def _pauses(farm: Farm) -> int:
    return sum((w.get("batch") or {}).get("pauses", 0) for w in farm.live_workers())


def _wait_idle(farm: Farm) -> None:
    def idle() -> bool:
        return all(not (w.get("batch") or {}).get("active") for w in farm.live_workers())

    wait_for(idle, 120, "every worker's batch to empty")


def bulk_run(farm: Farm, sizes: Sizes, priority: str, live: int, window: float | None) -> dict[str, Any]:
    """The bulk job under way (its first audio out), then either `live` live texts sent at once (the window lasts
    until the last one ended) or, with `live` 0, nothing for `window` seconds; the job is cancelled afterwards."""
    body = tts_body(" ".join([SENTENCE] * sizes.bulk_sentences), sizes.sentence_tokens, CHUNK, priority=priority)
    created = requests.post(farm.url("/jobs"), json=body, timeout=30)
    created.raise_for_status()
    job_id = created.json()["id"]
    pauses = _pauses(farm)
    with ProgressLog(farm, job_id) as progress:
        wait_for(lambda: farm.job(job_id)["progress"]["chunks"] >= WORKERS, 120, "the bulk job under way")
        start = time.perf_counter()
        if live:
            heard, _ = crowd(farm, _text_bodies(live, sizes))
        else:
            time.sleep(window or 0)  # the measuring window itself, not a wait for something to happen
        end = time.perf_counter()
        state = farm.job(job_id)["state"]
    requests.delete(farm.url(f"/jobs/{job_id}"), timeout=30)
    _wait_idle(farm)
    bulk_audio = progress.audio_at(end) - progress.audio_at(start)
    result: dict[str, Any] = {
        "bulk_audio_s": bulk_audio,
        "bulk_audio_per_wall_s": bulk_audio / (end - start),
        "bulk_running_throughout": state == "running",
        "pauses": _pauses(farm) - pauses,
        "window_s": end - start,
        "wall_s": end - start,
    }
    if live:
        result.update(summary(heard, end - start))
        result["listeners"] = [h.row() for h in heard]
    return result


def bulk_and_live(farm: Farm, sizes: Sizes, unit: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    heard, wall = crowd(farm, _text_bodies(unit, sizes))
    idle = summary(heard, wall)
    rows = [{"case": f"idle farm: {unit} live texts of {sizes.live_sentences} sentences", **idle}]
    runs: dict[str, Any] = {"idle": {**idle, "listeners": [h.row() for h in heard]}}
    for mode, priority in (("on", "bulk"), ("off", "live")):
        mixed = bulk_run(farm, sizes, priority, unit, None)
        alone = bulk_run(farm, sizes, priority, 0, mixed["window_s"])
        mixed["bulk_vs_alone"] = _ratio(mixed["bulk_audio_per_wall_s"], alone["bulk_audio_per_wall_s"])
        # The farm's audio is shared: the bulk job can only be expected to keep what the live streams left it.
        expected = alone["bulk_audio_per_wall_s"] * mixed["window_s"] - mixed["live_audio_s"]
        mixed["bulk_expected_s"] = expected
        mixed["bulk_vs_alone_minus_live"] = mixed["bulk_audio_s"] / expected if expected > 0 else None
        runs[mode] = {"with_live": mixed, "alone": alone}
        rows.append({"case": f"scheduling {mode}: bulk job ({priority}) alone", **_row_fields(alone)})
        rows.append({"case": f"scheduling {mode}: bulk job ({priority}) + live texts", **_row_fields(mixed)})
    return rows, runs


def _row_fields(run: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in run.items() if key != "listeners"}


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


# --- targets -------------------------------------------------------------------------------------------------------
def _verdict(label: str, value: float | None, target: str, passed: bool) -> dict[str, Any]:
    shown = "n/a" if value is None else f"{value:.3f}"
    return {"target": label, "value": value, "bound": target, "passed": passed, "line": f"{label}: {shown} ({target})"}


def targets(cases: list[dict[str, Any]], runs: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for case in cases:
        share = case["zero_stall_share"]
        if case["multiple"] <= 2.0:
            admitted = "every admitted stream" if case["multiple"] > 1.0 else "every stream"
            label = f"{case['case']}: share of {admitted} with zero stall"
            found.append(_verdict(label, share, "target 1.0", share == 1.0))
    idle = runs["idle"]
    for mode in ("on", "off"):
        mixed = runs[mode]["with_live"]
        first = _ratio(mixed["first_audio_p50_s"], idle["first_audio_p50_s"])
        found.append(
            _verdict(
                f"scheduling {mode}: live first audio p50 with bulk / idle",
                first,
                "<= 1.3",
                first is not None and first <= 1.3,
            )
        )
        stall_bound = max(idle["stall_p95_s"] or 0.0, CONTINUITY_LIMIT_S)
        stall = mixed["stall_p95_s"]
        found.append(
            _verdict(
                f"scheduling {mode}: live stall p95 with bulk (s)",
                stall,
                f"<= {stall_bound:.3f}: the idle farm's, or {CONTINUITY_LIMIT_S} if lower",
                stall is not None and stall <= stall_bound,
            )
        )
        kept = mixed["bulk_vs_alone_minus_live"]
        # The live texts may take all the audio the farm makes in the window (more than the bulk job made alone in
        # as long): then nothing is left to expect of the bulk job, and the target holds whatever it made.
        nothing_left = mixed["bulk_expected_s"] <= 0
        found.append(
            _verdict(
                f"scheduling {mode}: bulk audio with live / (alone over the window - live audio)",
                kept,
                ">= 0.8" + ("; live audio over the bulk job's alone: nothing left to expect" if nothing_left else ""),
                nothing_left or (kept is not None and kept >= 0.8),
            )
        )
    return found


def warm_up(farm: Farm, sizes: Sizes) -> None:
    """Every worker runs two streams of the cases' size first: HiFi-GAN's first calls at a span length are slower (about
    10 % on a CPU), and a lone stream there runs at about 1.25x real time, so a cold worker's first stream stalls
    where a warm one does not (measured: 0.1 s against 0 for the same stream)."""
    for _ in range(2):
        crowd(farm, _stream_bodies(WORKERS, sizes.stream_tokens))


def realtime(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    sizes = Sizes.from_env(quick)
    with local_farm(workers=WORKERS, threads_per_worker=1, extra_env=FARM_ENV) as farm:
        warm_up(farm, sizes)
        capacity, probes, first_audio_limit = measure_capacity(farm, sizes)
        unit = max(1, capacity)
        cases, streams = live_cases(farm, sizes, unit)
        bulk_rows, runs = bulk_and_live(farm, sizes, unit)
    with local_farm(workers=WORKERS, threads_per_worker=1, extra_env=OFF_ENV) as farm:
        warm_up(farm, sizes)
        off_cases, off_streams = live_cases(farm, sizes, unit, label="scheduling off: ")
    verdicts = targets(cases, runs)
    notes = [
        f"live capacity: {capacity} concurrent streams of {sizes.stream_tokens} tokens "
        f"({probes[0]['live_audio_s']:.1f} s of audio) on {WORKERS} workers of one torch thread, "
        f"measured by doubling then bisecting: every stream with zero stall (< {CONTINUITY_LIMIT_S} s) and first "
        f"audio p95 <= {first_audio_limit:.2f} s ({FIRST_AUDIO_FACTOR:g}x a lone stream's)"
        + (
            "; not even one stream plays without a stall here: the cases count in units of 1 stream"
            if not capacity
            else ""
        ),
        "'scheduling off' for live only = a second farm that never refuses (MAX_LIVE_WAIT_SECONDS=0) and whose "
        "workers take live streams up to their whole batch of 4 (WORKER_LIVE_CAPACITY=4), the same loads; "
        "for bulk and live = the same bulk job sent as priority live (one class, one queue, no pausing)",
        *(("PASS " if v["passed"] else "FAIL ") + v["line"] for v in verdicts),
    ]
    extra = {
        "sizes": asdict(sizes),
        "capacity": capacity,
        "first_audio_limit_s": first_audio_limit,
        "streams": streams,
        "streams_scheduling_off": off_streams,
        "bulk_and_live": runs,
        "targets": verdicts,
        "notes": notes,
    }
    rows = probes + cases + off_cases + bulk_rows
    return f"Real time: live streams against a real-time listener, {WORKERS} workers", _uniform(rows), extra


COLUMNS = (
    "case",
    "streams",
    "refused",
    "first_audio_p50_s",
    "first_audio_p95_s",
    "zero_stall_share",
    "stall_p95_s",
    "stall_max_s",
    "live_audio_s",
    "bulk_audio_per_wall_s",
    "bulk_vs_alone",
    "pauses",
    "wall_s",
)


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table: every row with the same columns (run.print_table takes its headers from the first row)."""
    return [{column: row.get(column) for column in COLUMNS} for row in rows]
