"""A bounded load run against a farm, on loopback: mixed requests from concurrent clients, some of which read
slowly, drop their connection and come back with their cursor, and some of which leave for good.

    python -m tools.loadtest --url http://127.0.0.1:8000 --requests 300 --concurrency 16 [--key KEY]

Afterwards it checks what "nothing lost" means: no 5xx, every job in a final state, and every listener that
stayed holding exactly the audio its job produced (sample for sample). Prints a JSON summary; exit status 1 if
anything was lost.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

FINAL = ("succeeded", "failed", "cancelled")
SENTENCES = (
    "The load test asks for this sentence.",
    "A second kind of request, a little longer than the first.",
    "Short one.",
    "Several clients ask for speech at the same time, some of them read slowly.",
)


@dataclass
class Outcome:
    kind: str
    status: int
    job_id: str | None = None
    samples: int | None = None  # audio the client received, when it stayed to the end
    left: bool = False  # the client left for good (the job may be cancelled)


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


class Client:
    def __init__(self, base_url: str, key: str | None, rng: random.Random) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.rng = rng

    def body(self) -> dict[str, Any]:
        tokens = self.rng.randint(6, 14)  # short requests: many of them, in bounded time on a small machine
        return {
            "text": self.rng.choice(SENTENCES),
            "language": "en",
            "speaker_id": "Claribel Dervla",
            "min_new_tokens": tokens,
            "max_new_tokens": tokens,
            "stream_chunk_size": self.rng.choice((4, 8)),
        }

    def url(self, path: str) -> str:
        return self.base_url + path

    def stream(self) -> Outcome:
        """POST /tts_stream; one client in ten leaves after the header (its job is cancelled)."""
        leave = self.rng.random() < 0.1
        with requests.post(
            self.url("/tts_stream"), json=self.body(), headers=self.headers, stream=True, timeout=300
        ) as response:
            if response.status_code != 200:
                return Outcome("tts_stream", response.status_code)
            job_id = response.headers["X-Session-Id"]
            data = b""
            for piece in response.iter_content(chunk_size=None):
                data += piece
                if leave:
                    return Outcome("tts_stream", 200, job_id, left=True)
        return Outcome("tts_stream", 200, job_id, samples=(len(data) - 44) // 2)

    def whole(self) -> Outcome:
        response = requests.post(self.url("/tts"), json=self.body(), headers=self.headers, timeout=300)
        if response.status_code != 200:
            return Outcome("tts", response.status_code)
        return Outcome("tts", 200, response.headers["X-Session-Id"], samples=(len(response.content) - 44) // 2)

    def job(self) -> Outcome:
        """POST /jobs, then pull its SSE stream: slowly, or dropping the connection and resuming from the
        cursor (once or twice), as a phone on a train would."""
        created = requests.post(self.url("/jobs"), json=self.body(), headers=self.headers, timeout=60)
        if created.status_code != 202:
            return Outcome("jobs", created.status_code)
        job_id = created.json()["id"]
        slow, drops = self.rng.random() < 0.3, self.rng.choice((0, 0, 1, 2))
        pcm, cursor = b"", None
        for attempt in range(20):
            params: dict[str, str] = {"cursor": cursor} if cursor else {}
            with requests.get(
                self.url(f"/jobs/{job_id}/stream"), params=params, headers=self.headers, stream=True, timeout=300
            ) as response:
                if response.status_code != 200:
                    return Outcome("jobs", response.status_code, job_id)
                dropped = False
                for event, event_id, data in _events(response):
                    if event == "audio":
                        pcm += base64.b64decode(data["pcm_s16le_base64"])
                        cursor = event_id
                        if slow:
                            time.sleep(0.05)
                        if drops and self.rng.random() < 0.3:
                            drops -= 1
                            dropped = True
                            break
                    elif event in ("end", "error"):
                        return Outcome("jobs", 200, job_id, samples=len(pcm) // 2)
                if not dropped:
                    time.sleep(0.1 * attempt)
        return Outcome("jobs", 200, job_id, samples=len(pcm) // 2)


def _events(response: requests.Response) -> Any:
    fields: dict[str, str] = {}
    for raw in response.iter_lines(decode_unicode=True):
        if raw:
            key, _, value = raw.partition(": ")
            fields[key] = value
        elif fields:
            yield fields.get("event"), fields.get("id"), json.loads(fields.get("data", "{}"))
            fields = {}


def run(base_url: str, requests_total: int, concurrency: int, key: str | None, seed: int = 1) -> dict[str, Any]:
    report = Report()
    rng = random.Random(seed)
    plan = [rng.choice(("stream", "stream", "whole", "job", "job")) for _ in range(requests_total)]

    def one(i: int) -> None:
        client = Client(base_url, key, random.Random(seed * 1000 + i))
        try:
            report.add(getattr(client, plan[i])())
        except requests.RequestException as exc:
            report.add(Outcome(plan[i], 0, None))
            print(f"request {i} ({plan[i]}) broke: {exc}", file=sys.stderr)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests_total)))
    return verify(base_url, key, report, time.monotonic() - started)


def _listened(outcome: Outcome) -> bool:
    """The client stayed to the end of the audio (it did not leave for good)."""
    return outcome.samples is not None and not outcome.left


def verify(base_url: str, key: str | None, report: Report, seconds: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    statuses = Counter(o.status for o in report.outcomes)
    jobs_seen = [o for o in report.outcomes if o.job_id]
    states: Counter[str] = Counter()
    lost_audio, not_final = [], []
    deadline = time.monotonic() + 300
    for outcome in jobs_seen:
        while True:
            job = requests.get(f"{base_url}/jobs/{outcome.job_id}", headers=headers, timeout=30).json()
            if job["state"] in FINAL or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        states[job["state"]] += 1
        if job["state"] not in FINAL:
            not_final.append(outcome.job_id)
        elif _listened(outcome) and job["state"] == "succeeded" and outcome.samples != job["progress"]["audio_samples"]:
            lost_audio.append(
                {"job": outcome.job_id, "received": outcome.samples, "produced": job["progress"]["audio_samples"]}
            )
    return {
        "requests": len(report.outcomes),
        "seconds": round(seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500 or k == 0),
        "jobs": len(jobs_seen),
        "job_states": dict(states),
        "jobs_not_final": not_final,
        "listeners_complete": sum(1 for o in jobs_seen if o.samples is not None and not o.left) - len(lost_audio),
        "clients_that_left": sum(1 for o in jobs_seen if o.left),
        "audio_lost": lost_audio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--key", default=None, help="an API key, when keys are on")
    parser.add_argument("--seed", type=int, default=1)
    ns = parser.parse_args()
    summary = run(ns.url, ns.requests, ns.concurrency, ns.key, ns.seed)
    print(json.dumps(summary, indent=2))
    lost = summary["server_errors"] or summary["jobs_not_final"] or summary["audio_lost"]
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
