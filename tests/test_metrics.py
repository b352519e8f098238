"""GET /metrics: the whole farm in Prometheus's format (every API process, every worker), read with
prometheus_client's own parser."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tools.localfarm import ROOT, VENV_BIN, Farm, _terminate, free_port, wait_for

SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, headers: dict[str, str] | None = None) -> Samples:
    response = requests.get(f"{base_url}/metrics", headers=headers or {}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))


def per_worker(samples: Samples, name: str) -> dict[str, float]:
    found: dict[str, float] = defaultdict(float)
    for (n, labels), v in samples.items():
        if n == name:
            found[dict(labels)["worker"]] += v
    return dict(found)


def _run_job(farm: Farm, speaker: str, sentences: int) -> dict:
    body = {"text": " ".join([SENTENCE] * sentences), "language": "en", "speaker_id": speaker}
    body |= {"min_new_tokens": 10, "max_new_tokens": 10}
    created = requests.post(farm.url("/jobs"), json=body, timeout=30)
    assert created.status_code == 202, created.text
    return farm.wait_for_state(created.json()["id"], ("succeeded", "failed"), 180)


def test_a_job_moves_the_farm_metrics_with_figures_from_both_workers(farm: Farm, speaker: str) -> None:
    def idle() -> Samples:  # the farm is shared: earlier tests' jobs must not count in this test's differences
        samples = scrape(farm.base_url)
        busy = value(samples, "xtts_jobs", state="queued") + value(samples, "xtts_jobs", state="running")
        return samples if busy == 0 else {}

    before = wait_for(idle, 180, "no queued or running job on the farm", interval=0.2)
    # Which worker takes which segment is the broker's choice: one may take all four. Jobs until both have worked.
    jobs, ran_on = 0, set()
    while len(ran_on) < 2 and jobs < 6:
        status = _run_job(farm, speaker, sentences=4)
        assert status["state"] == "succeeded"
        jobs += 1
        ran_on |= {s["worker"] for s in status["segments"]}
    assert len(ran_on) == 2, "both workers should have synthesized a segment"
    assert requests.get(farm.url("/jobs/no-such-job"), timeout=10).status_code == 404
    assert requests.post(farm.url("/jobs"), json={"text": ""}, timeout=10).status_code == 400
    assert requests.request("BREW", farm.url("/jobs"), timeout=10).status_code == 405  # an invented method
    assert requests.get(farm.url("/no/such/path"), timeout=10).status_code == 404

    def moved() -> Samples:  # a worker publishes its figures as its task ends: poll until both have
        after = scrape(farm.base_url)
        grown = per_worker(after, "xtts_real_time_factor_count")
        return (
            after
            if all(grown.get(w, 0) > per_worker(before, "xtts_real_time_factor_count").get(w, 0) for w in ran_on)
            else {}
        )

    after = wait_for(moved, 20, "both workers' real-time factors in /metrics", interval=0.2)

    # Jobs by state (SQL), live workers (registry), queue depth (Celery's lists in Redis).
    assert value(after, "xtts_jobs", state="succeeded") == value(before, "xtts_jobs", state="succeeded") + jobs
    assert {"queued", "running", "succeeded", "failed", "cancelled"} <= {
        dict(labels)["state"] for (n, labels) in after if n == "xtts_jobs"
    }
    assert value(after, "xtts_workers_live") == 2
    assert {dict(labels)["queue"] for (n, labels) in after if n == "xtts_queue_depth"} == {
        "synthesis",
        "synthesis.bulk",
        "voices",
    }

    # Worker figures, each under its worker's name: every worker that ran a segment counted it.
    for name in ("xtts_real_time_factor_count", "xtts_segments_total", "xtts_audio_seconds_total"):
        grown = {w for w, v in per_worker(after, name).items() if v > per_worker(before, name).get(w, 0)}
        assert grown == ran_on, name
    finished = {
        o: value(after, "xtts_segments_total", outcome=o) - value(before, "xtts_segments_total", outcome=o)
        for o in ("done", "job_done")
    }
    assert finished == {"done": 3 * jobs, "job_done": jobs}
    assert (
        value(after, "xtts_time_to_first_audio_seconds_count")
        == value(before, "xtts_time_to_first_audio_seconds_count") + jobs
    )
    assert value(after, "xtts_time_to_first_audio_seconds_bucket", le="+Inf") == value(
        after, "xtts_time_to_first_audio_seconds_count"
    )
    rtf = value(after, "xtts_real_time_factor_sum") - value(before, "xtts_real_time_factor_sum")
    assert rtf > 0
    assert value(after, "xtts_batch_steps_total") > value(before, "xtts_batch_steps_total")
    assert value(after, "xtts_batch_sequence_steps_total") >= value(after, "xtts_batch_steps_total")
    slots = per_worker(after, "xtts_batch_slots")
    assert len(slots) == 2 and all(v >= 1 for v in slots.values())
    assert set(per_worker(after, "xtts_voice_cache_hits_total")) == set(slots)

    # Requests by endpoint and status code, 4xx included.
    assert (
        value(after, "xtts_http_requests_total", endpoint="jobs.create_job", code="202")
        == value(before, "xtts_http_requests_total", endpoint="jobs.create_job", code="202") + jobs
    )
    counted = [dict(labels) for (n, labels) in after if n == "xtts_http_requests_total"]
    assert {"endpoint": "unmatched", "method": "other", "code": "405"} in counted
    assert not [c for c in counted if c["method"] == "BREW" or "/" in c["endpoint"]]  # labels stay a bounded set
    for endpoint, code in (("jobs.job_status", "404"), ("jobs.create_job", "400")):
        grown = value(after, "xtts_http_requests_total", endpoint=endpoint, code=code)
        assert grown >= value(before, "xtts_http_requests_total", endpoint=endpoint, code=code) + 1


@pytest.fixture
def second_api(farm: Farm, tmp_path) -> Iterator[str]:
    """Another API server (its own gunicorn master: another machine, as far as the farm can tell) on the same farm."""
    port = free_port()
    with open(tmp_path / "api2.log", "wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "api.wsgi:app"],
            cwd=ROOT,
            env={**farm.env, "PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{base}/health", timeout=2).ok, 60, "the second API")
        yield base
    finally:
        _terminate(proc)


def test_every_api_process_counts_into_the_same_figures(farm: Farm, second_api: str) -> None:
    before = scrape(farm.base_url)
    for _ in range(3):
        assert requests.get(f"{second_api}/saved_voices/no-such-voice", timeout=10).status_code == 404
    # The first API process's /metrics shows the other's requests, and both answer the same figures.
    after = scrape(farm.base_url)
    labels = {"endpoint": "voices.saved_voice", "code": "404"}
    counted = value(after, "xtts_http_requests_total", **labels) - value(before, "xtts_http_requests_total", **labels)
    assert counted == 3
    elsewhere = scrape(second_api)
    assert value(elsewhere, "xtts_http_requests_total", **labels) >= value(after, "xtts_http_requests_total", **labels)
    assert value(elsewhere, "xtts_workers_live") == 2


def test_the_metrics_collector_merges_workers_and_drops_a_dead_workers_gauges() -> None:
    from shared.metrics import merge_workers

    def family(kind: str, name: str, sample: str, v: float) -> dict:
        return {"name": name, "type": kind, "help": name, "samples": [[sample, {}, v]]}

    snapshots = {
        "w1@a/1": [
            family("counter", "xtts_segments", "xtts_segments_total", 3),
            family("gauge", "xtts_batch_active", "xtts_batch_active", 2),
        ],
        "w2@b/2": [
            family("counter", "xtts_segments", "xtts_segments_total", 5),
            family("gauge", "xtts_batch_active", "xtts_batch_active", 4),
        ],
    }
    merged = {m.name: m for m in merge_workers(snapshots, live={"w1@a/1"})}
    assert sorted((s.labels["worker"], s.value) for s in merged["xtts_segments"].samples) == [
        ("w1@a/1", 3),
        ("w2@b/2", 5),
    ]
    # A stopped worker's counters still count; what it was doing "now" is not shown.
    assert [(s.labels["worker"], s.value) for s in merged["xtts_batch_active"].samples] == [("w1@a/1", 2)]
