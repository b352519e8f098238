"""Voice agents (issue 20): the ElevenLabs-compatible WebSocket against /tts_stream, on a farm of 2 workers of one
torch thread each, dev model, through the whole farm.

1. First audio from the flush, farm idle: a context's sentence sent with `flush` on a socket already open, against a
   /tts_stream request of the same sentence (pcm both), one after the other, alternating; p50 and p95 of each, and
   their ratio (target: the socket within 10 % of /tts_stream).
2. The same at the farm's live capacity (its workers' own measure, summed): that many sockets, and that many
   /tts_stream requests, all at once.
3. Text at LLM speed: a text of 4 sentences written a word at a time at 20 tokens a second, played by a real-time
   listener (benchmarks/player.py) from its first audio, against the same text sent whole to /tts_stream: text
   arriving as it is written must not make the audio wait (no more stall than the whole text sent at once), and the
   first audio must come once the first sentence is complete, not the whole text.

Targets are printed as ratios measured in this one run, with PASS/FAIL; nothing here asserts them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode

import requests
from websockets.asyncio.client import connect

from benchmarks.concurrency_bench import _p95
from benchmarks.farm_bench import local_farm, stream
from benchmarks.player import CONTINUITY_LIMIT_S, play
from tools.localfarm import DEV_SPEAKER, Farm, wait_for

WORKERS = 2
SENTENCE = "The farm answers as soon as the sentence is complete. "
LLM_TEXT = (
    "Sure, I can help with that. Your order left our warehouse this morning. "
    "It should reach you on Thursday. Is there anything else I can do for you? "
)
TOKENS_PER_SECOND = 20.0
FARM_ENV = {"MAX_CONCURRENT_REQUESTS": "64", "MAX_LIVE_WAIT_SECONDS": "0", "WORKER_LIVE_CAPACITY": "0"}


def _socket_url(farm: Farm) -> str:
    query = urlencode({"output_format": "pcm_24000", "language_code": "en"})
    path = f"/v1/text-to-speech/{quote(DEV_SPEAKER)}/stream-input?{query}"
    return farm.url(path).replace("http://", "ws://")


async def _socket_first_audio(farm: Farm, text: str) -> float:
    """Seconds from the flush of `text` (the socket open and initialised before) to its first audio."""
    async with connect(_socket_url(farm)) as ws:
        await ws.send(json.dumps({"text": " "}))
        started = time.perf_counter()
        await ws.send(json.dumps({"text": text, "flush": True}))
        first = None
        async for raw in ws:
            message = json.loads(raw)
            if message.get("audio") and first is None:
                first = time.perf_counter() - started
                await ws.send(json.dumps({"text": ""}))
            if message.get("isFinal"):
                break
    if first is None:
        raise RuntimeError("the context sent no audio")
    return first


def _tts_stream_first_audio(farm: Farm, text: str) -> float:
    result = stream(farm, {"text": text, "language": "en", "speaker_id": DEV_SPEAKER, "response_format": "wav"})
    if result["first_audio_s"] is None:
        raise RuntimeError("/tts_stream sent no audio")
    return float(result["first_audio_s"])


def _summary(label: str, socket: list[float], http: list[float]) -> dict[str, Any]:
    ratio = statistics.median(socket) / statistics.median(http)
    return {
        "case": label,
        "runs": len(socket),
        "socket_first_audio_p50_s": statistics.median(socket),
        "socket_first_audio_p95_s": _p95(socket),
        "tts_stream_first_audio_p50_s": statistics.median(http),
        "tts_stream_first_audio_p95_s": _p95(http),
        "socket_over_tts_stream_p50": ratio,
    }


def idle_first_audio(farm: Farm, runs: int) -> dict[str, Any]:
    socket, http = [], []
    for _ in range(runs):
        socket.append(asyncio.run(_socket_first_audio(farm, SENTENCE)))
        http.append(_tts_stream_first_audio(farm, SENTENCE))
    return _summary("idle", socket, http)


def loaded_first_audio(farm: Farm, streams: int, rounds: int) -> dict[str, Any]:
    socket: list[float] = []
    http: list[float] = []

    async def crowd() -> list[float]:
        return list(await asyncio.gather(*(_socket_first_audio(farm, SENTENCE) for _ in range(streams))))

    for _ in range(rounds):
        socket += asyncio.run(crowd())
        with ThreadPoolExecutor(streams) as pool:
            http += list(pool.map(lambda _: _tts_stream_first_audio(farm, SENTENCE), range(streams)))
    return _summary(f"at live capacity ({streams} at once)", socket, http)


async def _llm_speed(farm: Farm) -> dict[str, Any]:
    """LLM_TEXT a word at a time at TOKENS_PER_SECOND, played from its first audio."""
    arrivals: list[tuple[float, float]] = []
    first_sentence_done = 0.0
    async with connect(_socket_url(farm)) as ws:
        await ws.send(json.dumps({"text": " "}))
        started = time.perf_counter()

        async def write() -> float:
            done_at = 0.0
            for word in LLM_TEXT.split():
                await ws.send(json.dumps({"text": word + " "}))
                if word.endswith(".") and not done_at:
                    done_at = time.perf_counter() - started
                await asyncio.sleep(1 / TOKENS_PER_SECOND)
            await ws.send(json.dumps({"text": ""}))
            return done_at

        writer = asyncio.create_task(write())
        async for raw in ws:
            message = json.loads(raw)
            if message.get("audio"):
                seconds = len(base64.b64decode(message["audio"])) / 2 / 24000
                arrivals.append((time.perf_counter() - started, seconds))
            if message.get("isFinal"):
                break
        first_sentence_done = await writer
        text_done = len(LLM_TEXT.split()) / TOKENS_PER_SECOND
    playback = play(arrivals)
    return {
        "case": f"socket, text at {TOKENS_PER_SECOND:g} tokens/s",
        "first_sentence_complete_s": first_sentence_done,
        "whole_text_sent_s": text_done,
        "first_audio_s": playback.first_audio_s,
        "audio_s": playback.audio_s,
        "stall_s": playback.stall_s,
        "stalls": playback.stalls,
    }


def _whole_text(farm: Farm) -> dict[str, Any]:
    """LLM_TEXT sent whole to /tts_stream (pcm), played from its first audio."""
    arrivals: list[tuple[float, float]] = []
    body = {"text": LLM_TEXT, "language": "en", "speaker_id": DEV_SPEAKER, "response_format": "pcm"}
    started = time.perf_counter()
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=900) as response:
        response.raise_for_status()
        for piece in response.iter_content(chunk_size=None):
            arrivals.append((time.perf_counter() - started, len(piece) / 2 / 24000))
    playback = play(arrivals)
    return {
        "case": "/tts_stream, the whole text at once",
        "first_audio_s": playback.first_audio_s,
        "audio_s": playback.audio_s,
        "stall_s": playback.stall_s,
        "stalls": playback.stalls,
    }


def _live_capacity(farm: Farm) -> int:
    def measured() -> int | None:
        capacities = [(w.get("batch") or {}).get("live_capacity") for w in farm.live_workers()]
        measured = [int(c) for c in capacities if c is not None]
        return sum(measured) if capacities and len(measured) == len(capacities) else None

    try:
        return max(1, wait_for(measured, 120, "the workers to measure their live capacity"))
    except TimeoutError:
        return 1


def agents(quick: bool) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    runs = 8 if quick else 20
    with local_farm(workers=WORKERS, threads_per_worker=1, extra_env=FARM_ENV) as farm:
        for _ in range(2):  # warm-up: every worker's first calls are slower
            _tts_stream_first_audio(farm, SENTENCE)
            asyncio.run(_socket_first_audio(farm, SENTENCE))
        capacity = _live_capacity(farm)
        idle = idle_first_audio(farm, runs)
        loaded = loaded_first_audio(farm, capacity, 2 if quick else 4)
        llm, whole = [], []
        for _ in range(2 if quick else 4):  # alternating, as the first-audio runs
            llm.append(asyncio.run(_llm_speed(farm)))
            whole.append(_whole_text(farm))
    llm_stall = statistics.median(run["stall_s"] for run in llm)
    whole_stall = statistics.median(run["stall_s"] for run in whole)
    late_starts = sum(
        1 for run in llm if run["first_audio_s"] is None or run["first_audio_s"] <= run["first_sentence_complete_s"]
    )
    verdicts = [
        (
            idle["socket_over_tts_stream_p50"] <= 1.10,
            f"idle: socket first audio from the flush {idle['socket_first_audio_p50_s']:.3f} s (p50) = "
            f"{idle['socket_over_tts_stream_p50']:.2f}x /tts_stream's {idle['tts_stream_first_audio_p50_s']:.3f} s "
            "(target <= 1.10x)",
        ),
        (
            loaded["socket_over_tts_stream_p50"] <= 1.10,
            f"at live capacity ({capacity}): socket {loaded['socket_first_audio_p50_s']:.3f} s (p50) = "
            f"{loaded['socket_over_tts_stream_p50']:.2f}x /tts_stream's (target <= 1.10x)",
        ),
        (
            llm_stall <= whole_stall + CONTINUITY_LIMIT_S and not late_starts,
            f"text at {TOKENS_PER_SECOND:g} tokens/s: stall {llm_stall:.3f} s (median of {len(llm)} runs) against "
            f"{whole_stall:.3f} s for the whole text sent at once to /tts_stream (target: no more, within "
            f"{CONTINUITY_LIMIT_S} s); first audio after the first sentence was complete in "
            f"{len(llm) - late_starts} of {len(llm)} runs",
        ),
    ]
    notes = [("PASS " if passed else "FAIL ") + line for passed, line in verdicts]
    extra = {"live_capacity": capacity, "llm_speed": llm, "whole_text": whole, "notes": notes}
    rows = [idle, loaded]
    return f"Voice agents: ElevenLabs' socket against /tts_stream, {WORKERS} workers", rows, extra
