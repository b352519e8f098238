"""A bounded load run against a farm, on loopback: mixed requests from concurrent clients, some of which read
slowly, drop their connection and come back with their cursor, and some of which leave for good.

    python -m tools.loadtest --url http://127.0.0.1:8000 --requests 300 --concurrency 16 [--key KEY]

Afterwards it checks what "nothing lost" means: no 5xx; every job final, and `succeeded` unless its client left
for good (then `cancelled`, or `succeeded` when the farm had sent all its audio before it noticed); and every client
that stayed holding exactly the audio its request asked for, sample for sample, counted from the requested tokens
(not from the farm's own bookkeeping), its response complete (a job's stream ended with `end`, not `error`). Prints
a JSON summary; exit status 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
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
# Each one sentence well under XTTS's 250 characters: every request is one segment.
SENTENCES = (
    "The load test asks for this sentence.",
    "A second kind of request, a little longer than the first.",
    "Short one.",
    "Several clients ask for speech at the same time, some of them read slowly.",
)
LEAVING = 0.1  # the share of streaming clients that leave for good after the first bytes
WAV_HEADER = 44
SAMPLE_RATE = 24000


def expected_samples(tokens: int) -> int:
    """The samples XTTS makes of one segment of exactly `tokens` audio tokens (min_new_tokens = max_new_tokens):
    x4 to mel frames at 22.05 kHz, resampled to 24 kHz, 256 samples per frame."""
    return math.floor(tokens * 4 * SAMPLE_RATE / 22050) * 256


@dataclass
class Outcome:
    kind: str
    status: int
    job_id: str | None = None
    tokens: int = 0  # audio tokens the request asked for (one segment)
    samples: int | None = None  # audio the client received
    complete: bool = False  # the response ended as a complete one does (a job's stream: its `end` event)
    error: str | None = None  # a job's stream ended with an `error` event
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
        self.tokens = 0

    def body(self) -> dict[str, Any]:
        self.tokens = self.rng.randint(6, 14)  # short requests: many of them, in bounded time on a small machine
        return {
            "text": self.rng.choice(SENTENCES),
            "language": "en",
            "speaker_id": "Claribel Dervla",
            "min_new_tokens": self.tokens,
            "max_new_tokens": self.tokens,
            "stream_chunk_size": self.rng.choice((4, 8)),
        }

    def url(self, path: str) -> str:
        return self.base_url + path

    def stream(self, leave: bool = False) -> Outcome:
        """POST /tts_stream, read to the end; or, `leave`, leave after the first bytes (its job is cancelled)."""
        with requests.post(
            self.url("/tts_stream"), json=self.body(), headers=self.headers, stream=True, timeout=300
        ) as response:
            if response.status_code != 200:
                return Outcome("tts_stream", response.status_code, tokens=self.tokens)
            job_id = response.headers["X-Session-Id"]
            data = b""
            for piece in response.iter_content(chunk_size=None):
                data += piece
                if leave:
                    return Outcome("tts_stream", 200, job_id, self.tokens, left=True)
        return self._wav("tts_stream", job_id, data)

    def whole(self) -> Outcome:
        response = requests.post(self.url("/tts"), json=self.body(), headers=self.headers, timeout=300)
        if response.status_code != 200:
            return Outcome("tts", response.status_code, tokens=self.tokens)
        return self._wav("tts", response.headers["X-Session-Id"], response.content)

    def _wav(self, kind: str, job_id: str, data: bytes) -> Outcome:
        """A WAV response read to its end: its PCM after the 44-byte header."""
        complete = data[:4] == b"RIFF" and data[36:40] == b"data"
        return Outcome(kind, 200, job_id, self.tokens, (len(data) - WAV_HEADER) // 2, complete=complete)

    def job(self) -> Outcome:
        """POST /jobs, then pull its SSE stream: slowly, or dropping the connection and resuming from the
        cursor (once or twice), as a phone on a train would."""
        created = requests.post(self.url("/jobs"), json=self.body(), headers=self.headers, timeout=60)
        if created.status_code != 202:
            return Outcome("jobs", created.status_code, tokens=self.tokens)
        job_id = created.json()["id"]
        slow, drops = self.rng.random() < 0.3, self.rng.choice((0, 0, 1, 2))
        pcm, cursor = b"", None
        for attempt in range(20):
            params: dict[str, str] = {"cursor": cursor} if cursor else {}
            with requests.get(
                self.url(f"/jobs/{job_id}/stream"), params=params, headers=self.headers, stream=True, timeout=300
            ) as response:
                if response.status_code != 200:
                    return Outcome("jobs", response.status_code, job_id, self.tokens, len(pcm) // 2)
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
                    elif event == "end":
                        return Outcome("jobs", 200, job_id, self.tokens, len(pcm) // 2, complete=True)
                    elif event == "error":
                        error = str(data.get("error", {}).get("message") or data)
                        return Outcome("jobs", 200, job_id, self.tokens, len(pcm) // 2, error=error)
                if not dropped:
                    time.sleep(0.1 * attempt)
        return Outcome("jobs", 200, job_id, self.tokens, len(pcm) // 2)  # never saw the end: incomplete


def _events(response: requests.Response) -> Any:
    fields: dict[str, str] = {}
    for raw in response.iter_lines(decode_unicode=True):
        if raw:
            key, _, value = raw.partition(": ")
            fields[key] = value
        elif fields:
            yield fields.get("event"), fields.get("id"), json.loads(fields.get("data", "{}"))
            fields = {}


def plan(requests_total: int, seed: int) -> list[tuple[str, bool]]:
    """(kind, leaves for good) of each request, decided before any is sent: what the run must then show."""
    rng = random.Random(seed)
    kinds = [rng.choice(("stream", "stream", "whole", "job", "job")) for _ in range(requests_total)]
    return [(kind, kind == "stream" and rng.random() < LEAVING) for kind in kinds]


def run(base_url: str, requests_total: int, concurrency: int, key: str | None, seed: int = 1) -> dict[str, Any]:
    report = Report()
    planned = plan(requests_total, seed)

    def one(i: int) -> None:
        client = Client(base_url, key, random.Random(seed * 1000 + i))
        kind, leave = planned[i]
        try:
            report.add(client.stream(leave) if kind == "stream" else getattr(client, kind)())
        except requests.RequestException as exc:
            report.add(Outcome(kind, 0, None, client.tokens, left=leave))
            print(f"request {i} ({kind}) broke: {exc}", file=sys.stderr)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests_total)))
    summary = verify(base_url, key, report, time.monotonic() - started)
    summary["clients_planned_to_stay"] = sum(1 for _, leave in planned if not leave)
    summary["clients_planned_to_leave"] = sum(1 for _, leave in planned if leave)
    return summary


def _final_state(base_url: str, headers: dict[str, str], job_id: str, deadline: float) -> str:
    while True:
        state = str(requests.get(f"{base_url}/jobs/{job_id}", headers=headers, timeout=30).json()["state"])
        if state in FINAL or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _incomplete(outcome: Outcome) -> str | None:
    """Why a client that stayed does not hold its request's audio (None: it does, sample for sample)."""
    expected = expected_samples(outcome.tokens)
    if outcome.error is not None:
        return f"its stream ended with an error event: {outcome.error}"
    if not outcome.complete:
        return "its response never completed"
    if outcome.samples != expected:
        return f"received {outcome.samples} samples, asked for {expected}"
    return None


def verify(base_url: str, key: str | None, report: Report, seconds: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    statuses = Counter(o.status for o in report.outcomes)
    jobs_seen = [o for o in report.outcomes if o.job_id]
    states: Counter[str] = Counter()
    left_states: Counter[str] = Counter()
    not_final, wrong_state, incomplete = [], [], []
    deadline = time.monotonic() + 300
    for outcome in jobs_seen:
        assert outcome.job_id is not None
        state = _final_state(base_url, headers, outcome.job_id, deadline)
        states[state] += 1
        if state not in FINAL:
            not_final.append(outcome.job_id)
            continue
        if outcome.left:
            left_states[state] += 1
            # Cancelled when the API saw its client leave; succeeded when it had already sent every byte.
            if state not in ("cancelled", "succeeded"):
                wrong_state.append({"job": outcome.job_id, "state": state, "client": "left"})
            continue
        if state != "succeeded":
            wrong_state.append({"job": outcome.job_id, "state": state, "client": "stayed"})
        why = _incomplete(outcome)
        if why is not None:
            incomplete.append({"job": outcome.job_id, "kind": outcome.kind, "why": why})
    stayed = [o for o in jobs_seen if not o.left]
    return {
        "requests": len(report.outcomes),
        "seconds": round(seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500 or k == 0),
        "jobs": len(jobs_seen),
        "job_states": dict(states),
        "jobs_not_final": not_final,
        "jobs_in_wrong_state": wrong_state,
        "listeners_complete": len(stayed) - len(incomplete),
        "listeners_incomplete": incomplete,
        "clients_that_left": sum(1 for o in jobs_seen if o.left),
        "jobs_of_clients_that_left": dict(left_states),
    }


def lost_anything(summary: dict[str, Any]) -> bool:
    """What fails a load run: a 5xx or a broken request, a job not final or in the wrong state, a client that
    stayed without all its audio, or fewer complete listeners than clients that stayed."""
    return bool(
        summary["server_errors"]
        or summary["jobs_not_final"]
        or summary["jobs_in_wrong_state"]
        or summary["listeners_incomplete"]
        or summary["listeners_complete"] != summary["clients_planned_to_stay"]
    )


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
    sys.exit(1 if lost_anything(summary) else 0)


if __name__ == "__main__":
    main()
