"""Jobs with polling (POST /jobs, GET /jobs/{id}, /audio), whole-file /tts, resumable pulls, stream status, cancel."""

from __future__ import annotations

from datetime import datetime

import requests

from tests.audio import read_wav, sse_events
from tools.localfarm import Farm, tts_body, wait_for


def _body(speaker: str, tokens: int, text: str = "Polling is how this job reports progress.", chunk: int = 10) -> dict:
    return tts_body(text, tokens, chunk, speaker)


def _times(status: dict) -> list[float]:
    stamps = status["timestamps"]
    return [datetime.fromisoformat(stamps[k]).timestamp() for k in ("queued", "started", "first_chunk", "finished")]


def test_polling_flow_from_submission_to_audio(farm: Farm, speaker: str) -> None:
    created = requests.post(farm.url("/jobs"), json=_body(speaker, 30), timeout=30)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["state"] == "queued"
    assert job["status_url"] == f"/jobs/{job['id']}" and created.headers["Location"] == job["status_url"]
    assert job["stream_url"] == f"/jobs/{job['id']}/stream" and job["audio_url"] == f"/jobs/{job['id']}/audio"

    seen = set()
    status = wait_for(
        lambda: (s := farm.job(job["id"])) and seen.add(s["state"]) is None and s["state"] == "succeeded" and s,
        120,
        "the job to succeed",
        0.05,
    )
    assert seen <= {"queued", "running", "succeeded"}
    queued, started, first_chunk, finished = _times(status)
    assert queued <= started <= first_chunk <= finished
    progress = status["progress"]
    assert progress["segments_done"] == progress["segments_total"] == 1
    assert progress["chunks"] >= 1 and progress["audio_seconds"] > 0.5
    assert status["error"] is None

    audio = requests.get(farm.url(job["audio_url"]), timeout=30)
    assert audio.status_code == 200 and audio.headers["Content-Type"] == "audio/wav"
    rate, frames, _pcm = read_wav(audio.content)
    assert rate == 24000 and frames == progress["audio_samples"]


def test_audio_of_an_unfinished_job_is_a_clear_409(farm: Farm, speaker: str) -> None:
    job = requests.post(farm.url("/jobs"), json=_body(speaker, 200), timeout=30).json()
    early = requests.get(farm.url(job["audio_url"]), timeout=30)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "job_not_ready"
    requests.delete(farm.url(f"/jobs/{job['id']}"), timeout=30)


def test_tts_returns_one_complete_wav(farm: Farm, speaker: str) -> None:
    response = requests.post(farm.url("/tts"), json=_body(speaker, 25), timeout=120)
    assert response.status_code == 200, response.text
    rate, frames, _ = read_wav(response.content)
    status = farm.job(response.headers["X-Session-Id"])
    assert status["state"] == "succeeded" and status["origin"] == "tts"
    assert rate == 24000 and frames == status["progress"]["audio_samples"]


def test_stream_resumes_from_a_cursor_without_gap_or_duplicate(farm: Farm, speaker: str) -> None:
    text = "First sentence of the resumable job. " * 6 + "And a second paragraph that adds another segment to it."
    job = requests.post(farm.url("/jobs"), json=_body(speaker, 30, text, chunk=5), timeout=30).json()

    received: list[tuple[str, bytes]] = []
    with requests.get(farm.url(job["stream_url"]), stream=True, timeout=120) as first:
        assert first.headers["Content-Type"].startswith("text/event-stream")
        for event in sse_events(first):
            assert event.event == "audio"
            received.append((event.id, event.pcm))
            if len(received) == 3:
                break  # the client drops the connection mid-stream

    # Reconnect with the last id as the cursor: get the rest, ending with an `end` event.
    with requests.get(
        farm.url(job["stream_url"]), params={"cursor": received[-1][0]}, stream=True, timeout=120
    ) as rest:
        events = list(sse_events(rest))
    assert events[-1].event == "end" and events[-1].data["state"] == "succeeded"
    received += [(e.id, e.pcm) for e in events if e.event == "audio"]

    ids = [event_id for event_id, _ in received]
    assert len(ids) == len(set(ids)), "a chunk was delivered twice"
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))), "chunks out of order"
    status = farm.job(job["id"])
    assert status["progress"]["segments_total"] >= 2
    assert len(received) == status["progress"]["chunks"], "a chunk is missing"
    whole = requests.get(farm.url(job["audio_url"]), timeout=30)
    assert b"".join(pcm for _, pcm in received) == read_wav(whole.content)[2]

    # EventSource's own reconnection header resumes the same way.
    with requests.get(
        farm.url(job["stream_url"]), headers={"Last-Event-ID": ids[-2]}, stream=True, timeout=60
    ) as again:
        tail = [e for e in sse_events(again) if e.event == "audio"]
    assert [e.id for e in tail] == ids[-1:]


def test_stream_status_and_cancel_of_a_running_stream_job(farm: Farm, speaker: str) -> None:
    body = _body(speaker, 400, "A long job that will be cancelled.", chunk=5)
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=120) as response:
        job_id = response.headers["X-Session-Id"]
        pieces = response.iter_content(chunk_size=None)
        received = next(pieces)
        while len(received) <= 44:  # wait for the first audio
            received += next(pieces)
        status = requests.get(farm.url(f"/stream_status/{job_id}"), timeout=10).json()
        assert status["state"] == "running"

        cancelled = requests.delete(farm.url(f"/stream_cancel/{job_id}"), timeout=10)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        chunks_at_cancel = cancelled.json()["progress"]["chunks"]
        for piece in pieces:  # the stream ends soon after the cancel
            received += piece

    def worker_stopped() -> bool:
        return not farm.workers_on(job_id)

    wait_for(worker_stopped, 60, "the worker to drop the cancelled job")
    final = requests.get(farm.url(f"/stream_status/{job_id}"), timeout=10).json()
    assert final["state"] == "cancelled" and final["timestamps"]["finished"]
    # The worker stops within one chunk of the cancel, far before the 400 tokens the request asked for.
    assert final["progress"]["chunks"] <= chunks_at_cancel + 1
    assert final["progress"]["audio_seconds"] < 400 * 1024 / 22050 / 2

    again = requests.delete(farm.url(f"/stream_cancel/{job_id}"), timeout=10)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_cancelling_a_queued_job_means_it_never_runs(farm: Farm, speaker: str) -> None:
    slots = sum(w["batch"]["max"] for w in farm.live_workers())  # fill every worker's every batch slot
    blockers = [requests.post(farm.url("/jobs"), json=_body(speaker, 60), timeout=30).json() for _ in range(slots)]
    queued = requests.post(farm.url("/jobs"), json=_body(speaker, 60), timeout=30).json()
    cancelled = requests.delete(farm.url(f"/jobs/{queued['id']}"), timeout=10).json()
    assert cancelled["state"] == "cancelled"
    for blocker in blockers:
        farm.wait_for_state(blocker["id"], ("succeeded",))
    final = farm.job(queued["id"])
    assert final["state"] == "cancelled" and final["progress"]["chunks"] == 0 and final["timestamps"]["started"] is None
