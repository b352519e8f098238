"""The farm's benchmark: `make bench` (or `python -m benchmarks.run`). Prints tables, writes JSON.

Every figure is a ratio or a median over repeated runs measured in this one process, because these
machines are noisy. Sections (run all, or pick with --only):

  streaming   streamed total / one-shot total at 100, 300, 600 tokens: the farm's worker engine and coqui's
              `inference_stream`, side by side; and how close the streamed audio is to one-shot decoding (SNR)
  steps       one step of the batched GPT (an audio token for each sequence) at batch sizes 1 to 16, dev model:
              milliseconds per step and per token
  pipeline    time to first audio through API + broker + worker + Redis stream, against the worker's own
              time to its first chunk (same model, same text)
  throughput  audio seconds per wall-clock second with 1 and 2 workers under concurrent requests
  longtext    a long text on 1 and 2 workers (time to first audio, total), and a short job's time to first
              audio while a long job runs, against the same short job on an idle farm
  concurrency one worker process, WORKER_MAX_BATCH=1 against batched: 1/4/8/16 concurrent streams of 100
              tokens with the dev model (first audio median and p95, aggregate and slowest-stream audio per
              wall second), a short request during a long text (idle vs busy), and the full-size checkpoint
              at 1 and 4 streams on the CPU
  gpu         on a GPU only (GPU_BENCH_REHEARSE=1: on the CPU, dev model, tiny sizes): the full-size random-weight
              model, float32 and float16, 1/8/16/32/64 streams submitted at once to one worker's scheduler: first
              audio p50/p95, stall of a real-time listener (benchmarks/listener.py), aggregate real-time factor,
              the most streams with zero stall
  formats     the response encoder alone (no farm): first encoded bytes after the first PCM chunk, per
              response_format, and encoding speed
  realtime    live streams played by a real-time listener on 2 workers: the farm's live capacity, first audio,
              stall and refusals at 0.5x-4x it, and live streams against a bulk job, scheduling on and off
              (sizes: REALTIME_* in benchmarks/realtime_bench.py)
  agents      voice agents on 2 workers: ElevenLabs' WebSocket against /tts_stream, first audio from the flush
              (p50/p95, idle and at the live capacity), and text written at 20 tokens/s played by a real-time
              listener (stall, first audio against the first sentence's end)
  fanout      one API process, no workers, a fake producer: 2 000 SSE listeners of running jobs and 500
              /tts_stream responses held at once; added first-audio and chunk latency (p50/p99), memory per
              listener, the process's CPU (benchmarks/fanout_bench.py)
  books       a 50 000-character book (POST /books) on 1 and 2 workers: audio seconds per wall second and the
              scaling ratio; live first audio and stall while a book runs, against the idle farm

Sections run one after another, each isolated: one that fails is reported (a table row, and its error and
traceback in the JSON) and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "streaming",
    "steps",
    "pipeline",
    "throughput",
    "longtext",
    "concurrency",
    "gpu",
    "formats",
    "realtime",
    "agents",
    "books",
    "fanout",
)


def print_table(title: str, rows: list[dict[str, Any]]) -> str:
    """Print rows as an aligned table (and return it as markdown for the report)."""
    if not rows:
        return ""
    headers = list(rows[0])
    cells = [[_fmt(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    md = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(md) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return "" if value is None else str(value)


def median(values: list[float]) -> float:
    return statistics.median(values)


Section = Callable[..., tuple[str, list[dict[str, Any]], dict[str, Any]]]
# Each section's module is imported when the section runs, inside its isolation: a GPU machine that lacks what one
# section needs (the agents section's WebSocket client) still runs the others.
RUNNERS: dict[str, str] = {
    "streaming": "model_bench.streaming",
    "steps": "model_bench.batch_steps",
    "gpu": "model_bench.gpu",
    "pipeline": "farm_bench.pipeline",
    "throughput": "farm_bench.throughput",
    "longtext": "farm_bench.longtext",
    "concurrency": "concurrency_bench.concurrency",
    "formats": "formats_bench.formats",
    "realtime": "realtime_bench.realtime",
    "agents": "agents_bench.agents",
    "books": "books_bench.books",
    "fanout": "fanout_bench.fanout",
}


def runner(name: str) -> Section:
    module, function = RUNNERS[name].split(".")
    section: Section = getattr(importlib.import_module(f"benchmarks.{module}"), function)
    return section


def run_section(name: str, quick: bool) -> tuple[dict[str, Any], str]:
    """One section, isolated: what it raises is caught and reported (in its JSON entry and a table row), so one
    failing section does not keep the others from running. Returns its JSON entry and its markdown."""
    started = time.perf_counter()
    try:
        title, rows, extra = runner(name)(quick=quick)
    except Exception as exc:  # any failure of one section is that section's result
        error = f"{type(exc).__name__}: {exc}"
        entry = {"failed": True, "error": error, "traceback": traceback.format_exc()}
        traceback.print_exc()
        report = print_table(f"{name}: FAILED", [{"section": name, "error": error}])
    else:
        entry = {"failed": False, "rows": rows, **extra}
        report = print_table(title, rows)
        for note in extra.get("notes", []):
            print(f"  {note}")
            report += f"- {note}\n"
    entry["seconds"] = round(time.perf_counter() - started, 1)
    return entry, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and no 600-token coqui run (minutes, not tens)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    ns = parser.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "python": sys.version.split()[0],
        "command": " ".join(["python -m benchmarks.run", *(sys.argv[1:] if argv is None else argv)]),
        "quick": ns.quick,
    }
    report = []
    started = time.perf_counter()
    for section in ns.only:
        results[section], markdown = run_section(section, ns.quick)
        report.append(markdown)
    failed = [section for section in ns.only if results[section]["failed"]]
    results["failed_sections"] = failed
    if failed:
        report.append(print_table("Failed sections", [{"section": s, "error": results[s]["error"]} for s in failed]))
    results["seconds"] = round(time.perf_counter() - started, 1)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"results-{stamp}.json", "latest.json"):
        (ns.out / name).write_text(json.dumps(results, indent=2))
    (ns.out / "latest.md").write_text("\n".join(report))
    print(f"\nwrote {ns.out / 'latest.json'} and {ns.out / 'latest.md'} ({results['seconds']} s)")
    if failed:
        print(f"FAILED sections: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
