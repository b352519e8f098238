"""POST /tts_stream: a WAV streamed while the workers synthesize, through Celery and Redis streams."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime

import requests

from tests.audio import parse_stream_wav
from tools.localfarm import DEV_SPEAKER, ROOT, Farm, tts_body


def test_stream_is_a_valid_wav_with_every_sample_the_worker_produced(farm: Farm, speaker: str) -> None:
    body = tts_body("Hello there. This is a streamed test.", 40, 10, speaker)
    response = requests.post(farm.url("/tts_stream"), json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("audio/wav")
    job_id = response.headers["X-Session-Id"]
    fmt, pcm = parse_stream_wav(response.content)
    assert fmt == {"format": 1, "channels": 1, "rate": 24000, "byte_rate": 48000, "align": 2, "bits": 16}
    status = farm.wait_for_state(job_id, ("succeeded",))
    assert len(pcm) % 2 == 0 and len(pcm) > 0
    assert len(pcm) // 2 == status["progress"]["audio_samples"]
    assert status["progress"]["segments_done"] == status["progress"]["segments_total"] >= 1


def test_first_audio_reaches_the_client_before_synthesis_ends(farm: Farm, speaker: str) -> None:
    body = tts_body("A longer sentence, so that synthesis takes a while.", 120, 8, speaker)
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=120) as response:
        assert response.status_code == 200
        received = b""
        first_audio_at = None
        for piece in response.iter_content(chunk_size=None):
            received += piece
            if first_audio_at is None and len(received) > 44:
                first_audio_at = time.time()
        job_id = response.headers["X-Session-Id"]
    status = farm.wait_for_state(job_id, ("succeeded",))
    finished = datetime.fromisoformat(status["timestamps"]["finished"]).timestamp()
    first_chunk = datetime.fromisoformat(status["timestamps"]["first_chunk"]).timestamp()
    assert first_audio_at is not None
    assert first_audio_at < finished, "the first audio arrived only after synthesis had ended"
    assert first_chunk < finished
    assert status["progress"]["chunks"] > 1


def test_the_readme_tts_stream_example_works_as_written(farm: Farm) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```bash\n(curl -X POST \"http://localhost:8000/tts_stream\".*?)\n```", readme, re.S)
    assert match, "the README must show the single-server API's /tts_stream curl example"
    command = match.group(1).replace("http://localhost:8000", farm.base_url)
    assert DEV_SPEAKER in command  # the example uses a built-in speaker
    out = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, check=True).stdout
    fmt, pcm = parse_stream_wav(out)
    assert fmt["rate"] == 24000 and len(pcm) > 24000 // 2


def test_stream_keys_are_bounded_and_expire(farm: Farm, speaker: str) -> None:
    body = tts_body("Keys expire.", 20, 5, speaker)
    response = requests.post(farm.url("/tts_stream"), json=body, timeout=120)
    job_id = response.headers["X-Session-Id"]
    client = farm.redis()
    keys = list(client.scan_iter(match=f"xtts:job:{job_id}:*"))
    for key in keys:  # the segment's stream and its owner (the run that wrote it)
        assert 0 < client.ttl(key) <= 3600, f"{key!r} does not expire"
    streams = [key for key in keys if client.type(key) == b"stream"]
    assert streams == [f"xtts:job:{job_id}:seg:0".encode()], "the job's audio should be in a Redis stream"
    assert client.xlen(streams[0]) <= 2000
    entries = client.xrange(streams[0])
    assert entries[0][1][b"type"] == b"audio" and entries[-1][1][b"type"] == b"end"
    assert [int(f[b"seq"]) for _, f in entries] == list(range(1, len(entries) + 1))
    # Each audio chunk records the audio tokens it was decoded from: 20 tokens in all, for resuming exactly.
    tokens = sum(len(f[b"tokens"]) // 2 for _, f in entries if f[b"type"] == b"audio")
    assert tokens == 20
