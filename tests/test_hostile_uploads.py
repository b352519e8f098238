"""Hostile uploads through the running API (gunicorn, real ffmpeg): each answers a 4xx quickly, fetches nothing,
and the API process's memory stays bounded.

Memory is the gunicorn worker's peak resident set (VmHWM in /proc), reset before each case (`clear_refs` 5), so the
figure is the peak *during* the request. Run with `-s` to see the timings and peaks (docs/security.md records them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.listeners import Listeners
from tools.localfarm import Farm

MB = 2**20
# The test farm's limits (tools/localfarm.py): 2 MB per request, 20 s per file, 50 s per request.
MAX_SECONDS, MAX_TOTAL_SECONDS = 20, 50
# The API's own memory may grow by at most this during a hostile upload: the upload itself (2 MB) and the decoded
# limit (20 s of 16-bit samples: 0.9 MB, as float32: 1.8 MB), with room for Python's allocator. Decoded whole,
# the FLAC below would be 397 MB of 16-bit samples.
MEMORY_BOUND = 48 * MB


def _api_worker_pid(farm: Farm) -> int:
    """The gunicorn worker process (the child of the master that the farm started), which serves the requests."""
    assert farm.api is not None
    children = Path(f"/proc/{farm.api.pid}/task/{farm.api.pid}/children").read_text().split()
    assert len(children) == 1, children  # API_PROCESSES=1
    return int(children[0])


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _measured(farm: Farm, what: str, send: Callable[[], requests.Response]) -> tuple[requests.Response, float, int]:
    """(response, seconds, peak growth of the API worker's resident memory in bytes) of one request."""
    pid = _api_worker_pid(farm)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kb(pid, "VmRSS")
    started = time.perf_counter()
    response = send()
    elapsed = time.perf_counter() - started
    peak = _status_kb(pid, "VmHWM")
    print(
        f"hostile upload: {what}: {response.status_code} in {elapsed:.3f} s; "
        f"API worker RSS {before // 1024} MB, peak {peak // 1024} MB during the request"
    )
    return response, elapsed, (peak - before) * 1024


def _clone(farm: Farm, files: list[tuple[str, bytes]], options: dict | None = None) -> requests.Response:
    data = {"options": json.dumps(options)} if options else {}
    return requests.post(farm.url("/clone_speaker"), files=[("wav_file", f) for f in files], data=data, timeout=60)


def _error(response: requests.Response, status: int, code: str) -> str:
    body = response.json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


@pytest.mark.parametrize("filename", ["x.mp3", "x.m3u8"])
def test_a_playlist_upload_makes_the_api_fetch_nothing(farm: Farm, listeners: Listeners, filename: str) -> None:
    """ffmpeg, left to guess, opens every URL of an HLS playlist: one that never answers held the thread forever."""
    playlist = (
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n"
        f"#EXTINF:10,\n{listeners.http_url}/seg0.ts\n#EXTINF:10,\n{listeners.silent_url}/seg1.ts\n"
        f"#EXTINF:10,\nfile:{listeners.fifo}\n#EXT-X-ENDLIST\n"
    ).encode()
    response, elapsed, grown = _measured(
        farm, f"HLS playlist as {filename}", lambda: _clone(farm, [(filename, playlist)])
    )
    assert "is not audio" in _error(response, 400, "not_audio")
    assert elapsed < 5 and grown < MEMORY_BOUND
    assert listeners.untouched(), (listeners.requests, listeners.connections, listeners.fifo_opened)


def test_hours_of_flac_are_stopped_at_the_limit_quickly_in_bounded_memory(farm: Farm, lavfi_audio) -> None:
    """1.6 MB of FLAC that decodes to 2.5 hours (397 MB of 16-bit samples at 22.05 kHz): decoding stops at 20 s."""
    flac = lavfi_audio("silence-2h30.flac", "anullsrc=r=8000:cl=mono", "-t", "9000", "-c:a", "flac")
    assert len(flac) < 2 * MB - 4096
    response, elapsed, grown = _measured(
        farm, f"{len(flac) / MB:.1f} MB FLAC of 2.5 h", lambda: _clone(farm, [("long.flac", flac)])
    )
    assert f"limited to {MAX_SECONDS} s" in _error(response, 400, "unusable_audio")
    assert elapsed < 5 and grown < MEMORY_BOUND


def test_too_many_parts_are_refused_before_decoding(farm: Farm, lavfi_audio) -> None:
    part = lavfi_audio("tone-20s.wav", "sine=frequency=300:sample_rate=8000:duration=20", "-c:a", "pcm_u8")
    response, elapsed, grown = _measured(
        farm, "6 parts of 20 s", lambda: _clone(farm, [(f"p{i}.wav", part) for i in range(6)])
    )
    assert "at most 5" in _error(response, 413, "too_much_reference_audio")
    assert elapsed < 5 and grown < MEMORY_BOUND


def test_parts_adding_up_past_the_total_stop_there(farm: Farm, lavfi_audio) -> None:
    part = lavfi_audio("tone-20s.wav", "sine=frequency=300:sample_rate=8000:duration=20", "-c:a", "pcm_u8")
    response, elapsed, grown = _measured(
        farm, "3 parts of 20 s (60 s > 50 s)", lambda: _clone(farm, [(f"p{i}.wav", part) for i in range(3)])
    )
    assert f"more than {MAX_TOTAL_SECONDS} s" in _error(response, 413, "too_much_reference_audio")
    assert elapsed < 5 and grown < MEMORY_BOUND
