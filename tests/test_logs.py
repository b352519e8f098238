"""Traceable logs: every line about a job carries its job id and tenant, from the API and from the workers
(LOG_FORMAT=json is shown on a farm of its own in test_settings_effect.py)."""

from __future__ import annotations

import io
import json
import logging
import threading

import requests

from shared import logs
from shared.settings import Settings
from tools.localfarm import Farm, wait_for


def _logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logs.make_handler(Settings(LOG_FORMAT=fmt))
    handler.setStream(out)  # type: ignore[attr-defined]
    logger = logging.getLogger(f"test-logs-{fmt}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    return logger, out


def test_bound_ids_appear_on_every_line_until_cleared() -> None:
    logger, out = _logger("text")
    logs.bind(job_id="j1", tenant="acme")
    try:
        logger.info("about the job")
        logger.warning("still about it", extra={"job_id": "j2"})  # an id given with the record wins
    finally:
        logs.clear()
    logger.info("about nothing")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("INFO test-logs-text: about the job job=j1 tenant=acme")
    assert lines[1].endswith("still about it job=j2 tenant=acme")
    assert lines[2].endswith("about nothing")


def test_json_lines_carry_the_ids_and_the_traceback() -> None:
    logger, out = _logger("json")
    logs.bind(job_id="j1", tenant="acme")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logs.clear()
    record = json.loads(out.getvalue())
    assert (record["level"], record["message"], record["job_id"], record["tenant"]) == ("ERROR", "failed", "j1", "acme")
    assert "ValueError: boom" in record["exception"] and record["time"].endswith("+00:00")


def test_each_thread_has_its_own_ids() -> None:
    logger, out = _logger("text")
    logs.clear()
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        logs.bind(job_id="other-job")
        ready.set()
        done.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    ready.wait(5)
    logger.info("here")
    done.set()
    thread.join()
    assert "job=" not in out.getvalue()


def test_a_jobs_lines_name_it_in_the_api_and_the_workers(farm: Farm, speaker: str) -> None:
    body = {"text": "Every line names this job.", "language": "en", "speaker_id": speaker, "max_new_tokens": 8}
    job_id = requests.post(farm.url("/jobs"), json=body, timeout=30).json()["id"]
    assert farm.wait_for_state(job_id, ("succeeded", "failed"))["state"] == "succeeded"
    requests.get(farm.url(f"/jobs/{job_id}"), timeout=10)

    def lines(name: str) -> list[str]:
        return [line for line in (farm.log_dir / f"{name}.log").read_text().splitlines() if job_id in line]

    api = wait_for(lambda: lines("api") if len(lines("api")) >= 3 else [], 10, "the API's lines about the job")
    tagged = f"job={job_id} tenant=default"
    assert any("job queued" in line and line.endswith(tagged) for line in api)
    assert any('"POST /jobs HTTP/1.1" 202' in line and line.endswith(tagged) for line in api)  # the access line
    assert any(f'"GET /jobs/{job_id} HTTP/1.1" 200' in line and line.endswith(tagged) for line in api)
    worker = [line for name in farm.workers for line in lines(name)]
    assert any("xtts.synthesize_segment" in line and "received" in line for line in worker)
    assert any("succeeded" in line and line.endswith(tagged) for line in worker)
