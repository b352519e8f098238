"""Voice agents on ElevenLabs' protocols, with a real WebSocket client (the `websockets` package) against a running
farm: text sent word by word as an LLM writes it, several contexts on one socket, interruptions, character timing,
every output format, bad messages, API keys; and the HTTP endpoints with timestamps and the voice list."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests
from websockets.asyncio.client import ClientConnection, connect

from tools.localfarm import DEV_SPEAKER, Farm

SAMPLE_RATE = 24000
SENTENCES = ["The farm speaks as the agent writes. ", "Each sentence leaves at once. ", "The last one ends here. "]
TEXT = "".join(SENTENCES)


def ws_url(farm: Farm, endpoint: str = "stream-input", voice: str = DEV_SPEAKER, **query: Any) -> str:
    params = {"output_format": "pcm_24000", **query}
    path = f"/v1/text-to-speech/{quote(voice)}/{endpoint}"
    return farm.url(path).replace("http://", "ws://") + "?" + urlencode(params)


@dataclass
class Heard:
    """What one context sent back, as it arrived."""

    audio: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    first_audio_at: float | None = None
    final: bool = False
    session: str | None = None

    def take(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.session = message.get("sessionId", self.session)
        if message.get("isFinal"):
            self.final = True
        if message.get("audio"):
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            self.audio += base64.b64decode(message["audio"])

    def alignment(self, key: str = "normalizedAlignment") -> list[tuple[str, int, int]]:
        """(char, start, end) in ms from the context's first audio, each chunk's times shifted by the audio
        before it (pcm_24000)."""
        out, offset = [], 0.0
        for message in self.messages:
            if "audio" not in message:
                continue
            timing = message.get(key)
            if timing:
                for ch, start, duration in zip(
                    timing["chars"], timing["charStartTimesMs"], timing["charDurationsMs"], strict=True
                ):
                    out.append((ch, round(offset + start), round(offset + start + duration)))
            offset += len(base64.b64decode(message["audio"])) / 2 / SAMPLE_RATE * 1000
        return out


async def _receive(ws: ClientConnection, heard: dict[str, Heard]) -> None:
    async for raw in ws:
        message = json.loads(raw)
        heard.setdefault(message.get("contextId", ""), Heard()).take(message)


def _job(farm: Farm, job_id: str) -> dict[str, Any]:
    response = requests.get(farm.url(f"/jobs/{job_id}"), headers=farm.headers, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def test_text_sent_word_by_word_is_spoken_sentence_by_sentence_as_one_request_would(farm: Farm) -> None:
    async def converse() -> tuple[Heard, float, float]:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm)) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            await ws.send(json.dumps({"text": " ", "voice_settings": {"speed": 1.0}}))
            first_sentence_sent = last_word_sent = 0.0
            for n, sentence in enumerate(SENTENCES):
                for word in sentence.split():
                    await ws.send(json.dumps({"text": word + " "}))
                    await asyncio.sleep(0.05)  # 20 words a second, as an LLM writes
                if n == 0:
                    first_sentence_sent = time.monotonic()
            last_word_sent = time.time()
            await ws.send(json.dumps({"text": ""}))
            await asyncio.wait_for(receiver, 300)
        return heard[""], first_sentence_sent, last_word_sent

    heard, first_sentence_sent, last_word_sent = asyncio.run(converse())
    assert heard.final and heard.first_audio_at is not None
    assert heard.first_audio_at > first_sentence_sent  # the first sentence was complete before it was spoken
    job = _job(farm, str(heard.session))
    assert job["state"] == "succeeded" and job["origin"] == "agent" and not job["text_open"]
    segments = job["segments"]
    assert [s["characters"] for s in segments] == [len(s.strip()) for s in SENTENCES]
    # Each sentence went to the workers as soon as it was complete, not once the text had all come.
    started = [s["started"] for s in segments]
    assert started[0] is not None
    assert _epoch(started[0]) < last_word_sent

    # Each sentence said in a request of its own: the same samples, and all of them the same audio length.
    alone = [_spoken_alone(farm, sentence) for sentence in SENTENCES]
    assert [s["audio_samples"] for s in segments] == [len(pcm) // 2 for pcm in alone]
    assert len(heard.audio) == sum(len(pcm) for pcm in alone)


def _spoken_alone(farm: Farm, text: str, speaker: str = DEV_SPEAKER) -> bytes:
    body = {"text": text, "language": "en", "speaker_id": speaker, "response_format": "pcm"}
    response = requests.post(farm.url("/tts"), json=body, timeout=300)
    response.raise_for_status()
    return response.content


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def _segment_bounds_ms(job: dict[str, Any]) -> list[float]:
    """Where each segment's audio starts and the last ends, in ms from the job's first sample."""
    bounds, at = [0.0], 0
    for segment in job["segments"]:
        at += segment["audio_samples"]
        bounds.append(at * 1000 / SAMPLE_RATE)
    return bounds


def test_alignment_covers_every_character_once_in_order_within_the_audio_exact_at_segment_joins(
    farm: Farm,
) -> None:
    async def converse() -> Heard:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm)) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            await ws.send(json.dumps({"text": " "}))
            for word in TEXT.split():
                await ws.send(json.dumps({"text": word + " "}))
            await ws.send(json.dumps({"text": ""}))
            await asyncio.wait_for(receiver, 300)
        return heard[""]

    heard = asyncio.run(converse())
    job = _job(farm, str(heard.session))
    duration_ms = len(heard.audio) / 2 / SAMPLE_RATE * 1000
    bounds = _segment_bounds_ms(job)
    assert abs(bounds[-1] - duration_ms) < 0.05
    written = heard.alignment("alignment")
    assert "".join(ch for ch, _, _ in written) == TEXT  # the text as written, every character once
    said = heard.alignment("normalizedAlignment")
    lengths = [s["characters"] for s in job["segments"]]
    assert len(said) == sum(lengths)
    for timing in (written, said):
        starts = [start for _, start, _ in timing]
        assert starts == sorted(starts) and starts[0] == 0
        assert all(start <= end <= duration_ms + 1 for _, start, end in timing)
        assert abs(timing[-1][2] - duration_ms) <= 1  # the last character ends with the audio
    # Each segment's characters begin with its first sample and end with its last (to the millisecond).
    at = 0
    for k, length in enumerate(lengths):
        chars = said[at : at + length]
        assert abs(chars[0][1] - bounds[k]) <= 1 and abs(chars[-1][2] - bounds[k + 1]) <= 1, (k, chars[0], chars[-1])
        at += length
    assert all(m.get("alignment_source") == "estimate" for m in heard.messages if "audio" in m)


def test_two_contexts_on_one_socket_speak_in_two_voices_each_in_order(farm: Farm) -> None:
    other = next(
        s for s in requests.get(farm.url("/available_speakers"), timeout=10).json()["speakers"] if s != DEV_SPEAKER
    )
    texts = {"a": "First voice, first sentence. And its second one. ", "b": "Second voice speaks too. "}

    async def converse() -> dict[str, Heard]:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm, "multi-stream-input")) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            await ws.send(json.dumps({"text": " ", "context_id": "a"}))
            await ws.send(json.dumps({"text": " ", "context_id": "b", "voice_id": other}))
            for words in zip(texts["a"].split(), texts["b"].split() + [""] * 9, strict=False):
                for name, word in zip("ab", words, strict=True):
                    if word:
                        await ws.send(json.dumps({"text": word + " ", "context_id": name}))
            for name in "ab":
                await ws.send(json.dumps({"context_id": name, "flush": True}))
                await ws.send(json.dumps({"context_id": name, "close_context": True}))
            await asyncio.wait_for(_until_final(heard, "ab"), 300)
            await ws.send(json.dumps({"close_socket": True}))
            await asyncio.wait_for(receiver, 60)
        return heard

    heard = asyncio.run(converse())
    for name, voice in (("a", DEV_SPEAKER), ("b", other)):
        job = _job(farm, str(heard[name].session))
        assert job["state"] == "succeeded" and job["speaker"]["id"] == voice
        # Its audio is its own text in its own voice, complete: each sentence as alone.
        alone = [_spoken_alone(farm, s, voice) for s in _sentences(texts[name])]
        assert [s["audio_samples"] for s in job["segments"]] == [len(pcm) // 2 for pcm in alone]
        assert len(heard[name].audio) == sum(len(pcm) for pcm in alone)
    assert heard["a"].session != heard["b"].session


def _sentences(text: str) -> list[str]:
    return [piece.strip() + " " for piece in text.replace(". ", ".\n").splitlines() if piece.strip()]


async def _until_final(heard: dict[str, Heard], names: str) -> None:
    while not all(name in heard and heard[name].final for name in names):
        await asyncio.sleep(0.02)


def test_close_context_mid_sentence_stops_its_audio_within_a_chunk_and_cancels_it_while_the_other_goes_on(
    farm: Farm,
) -> None:
    long = "This sentence runs on for a good while so that it is still being spoken when the caller interrupts. "

    async def converse() -> tuple[dict[str, Heard], int]:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm, "multi-stream-input")) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            for name in "ab":
                await ws.send(json.dumps({"text": long, "context_id": name, "flush": True}))
            await ws.send(json.dumps({"text": "and then it", "context_id": "a"}))  # mid-sentence: not flushed
            await asyncio.wait_for(_until_audio(heard, "a"), 120)
            received = sum(1 for m in heard["a"].messages if m.get("audio"))
            await ws.send(json.dumps({"context_id": "a", "close_context": True}))
            await asyncio.wait_for(_until_final(heard, "a"), 60)
            after = sum(1 for m in heard["a"].messages if m.get("audio")) - received
            await ws.send(json.dumps({"context_id": "b", "close_context": True}))
            await asyncio.wait_for(_until_final(heard, "b"), 300)
            await ws.send(json.dumps({"close_socket": True}))
            await asyncio.wait_for(receiver, 60)
        return heard, after

    heard, after = asyncio.run(converse())
    assert after <= 1  # within one chunk of the close
    interrupted = _job(farm, str(heard["a"].session))
    assert interrupted["state"] == "cancelled"
    # What the agent got is consistent: the characters timed are those of the audio it received, no more.
    said = heard["a"].alignment("normalizedAlignment")
    duration_ms = len(heard["a"].audio) / 2 / SAMPLE_RATE * 1000
    assert said and all(end <= duration_ms + 1 for _, _, end in said)
    assert len(said) < len(long.strip())
    finished = _job(farm, str(heard["b"].session))
    assert finished["state"] == "succeeded"
    assert len(heard["b"].audio) == len(_spoken_alone(farm, long))


async def _until_audio(heard: dict[str, Heard], name: str) -> None:
    while name not in heard or heard[name].first_audio_at is None:
        await asyncio.sleep(0.005)
