"""Voice agents on ElevenLabs' protocols, with a real WebSocket client (the `websockets` package) against a running
farm: text sent word by word as an LLM writes it, several contexts on one socket, interruptions, character timing,
every output format, bad messages, API keys; and the HTTP endpoints with timestamps and the voice list."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tools.localfarm import DEV_SPEAKER, ROOT, Farm, wait_for

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
    last_audio_at: float | None = None
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
            self.last_audio_at = time.monotonic()
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


_ALONE: dict[tuple[str, str], bytes] = {}


def _spoken_alone(farm: Farm, text: str, speaker: str = DEV_SPEAKER) -> bytes:
    """`text` synthesized by a request of its own (pcm). Its length depends on the text alone (the dev model's
    length is its text's), so the tests of this module share each answer."""
    if (text, speaker) not in _ALONE:
        body = {"text": text, "language": "en", "speaker_id": speaker, "response_format": "pcm"}
        response = requests.post(farm.url("/tts"), json=body, timeout=300)
        response.raise_for_status()
        _ALONE[text, speaker] = response.content
    return _ALONE[text, speaker]


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
        assert all(start < end <= duration_ms + 1 for _, start, end in timing)  # each takes time, within the audio
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
    # Interleaved: the two contexts were spoken at once, not one after the other.
    assert heard["b"].first_audio_at is not None and heard["a"].last_audio_at is not None
    assert heard["b"].first_audio_at < heard["a"].last_audio_at


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
            await ws.send(json.dumps({"text": long, "context_id": "a", "flush": True}))
            await ws.send(json.dumps({"text": SENTENCES[1], "context_id": "b", "flush": True}))
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
    assert len(heard["b"].audio) == len(_spoken_alone(farm, SENTENCES[1]))


async def _until_audio(heard: dict[str, Heard], name: str) -> None:
    while name not in heard or heard[name].first_audio_at is None:
        await asyncio.sleep(0.005)


FORMATS = (
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "ulaw_8000",
    "alaw_8000",
    "mp3_44100_128",
    "opus_48000_64",
)
# What a decoder may add to a compressed stream: LAME's delay and a last frame (MP3 without a Xing header says
# neither), an Opus frame (Ogg signals its pre-skip).
CODEC_SLACK = {"mp3": 1105 + 1152 + 529, "opus": 960}


def _decoded(data: bytes, fmt: str) -> tuple[int, int]:
    """(sample rate, samples) of `data` in ElevenLabs' `fmt`, as ffmpeg reads it."""
    codec, rate = fmt.split("_")[:2]
    demux = {
        "pcm": ["-f", "s16le", "-ar", rate, "-ac", "1"],
        "ulaw": ["-f", "mulaw", "-ar", rate, "-ac", "1"],
        "alaw": ["-f", "alaw", "-ar", rate, "-ac", "1"],
    }.get(codec, [])
    probe = subprocess.run(
        ["ffprobe", "-v", "error", *demux, "-i", "pipe:0", "-show_entries", "stream=sample_rate", "-of", "json"],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
    )
    found = int(json.loads(probe.stdout)["streams"][0]["sample_rate"])
    done = subprocess.run(
        ["ffmpeg", "-v", "error", *demux, "-i", "pipe:0", "-f", "s16le", "-ac", "1", "pipe:1"],
        input=data,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return found, len(done.stdout) // 2


def test_every_output_format_decodes_to_its_rate_and_length(farm: Farm) -> None:
    async def speak(fmt: str) -> Heard:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm, output_format=fmt)) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            await ws.send(json.dumps({"text": " "}))
            await ws.send(json.dumps({"text": "Formats of every kind. "}))
            await ws.send(json.dumps({"text": ""}))
            await asyncio.wait_for(receiver, 300)
        return heard[""]

    async def all_formats() -> list[Heard]:
        return list(await asyncio.gather(*(speak(fmt) for fmt in FORMATS)))

    for fmt, heard in zip(FORMATS, asyncio.run(all_formats()), strict=True):
        made = _job(farm, str(heard.session))["progress"]["audio_samples"]
        rate = int(fmt.split("_")[1])
        found, samples = _decoded(bytes(heard.audio), fmt)
        assert found == rate, fmt
        expected = round(made * rate / SAMPLE_RATE)
        slack = CODEC_SLACK.get(fmt.split("_")[0], 0) * rate // 44100
        assert expected <= samples <= expected + slack, (fmt, samples, expected)


def _telling(kept: Any, message: dict[str, Any]) -> Any:
    """The message that tells how a socket ended: its error, else its last message (an interrupted context's
    isFinal may come after the error)."""
    return kept if kept is not None and kept.get("error") else message


def _refused(farm: Farm, messages: list[Any], endpoint: str = "stream-input", **query: Any) -> tuple[int, str, Any]:
    """Sends `messages` (a str or bytes as they are, anything else as JSON) and returns how the socket ended: its close
    code and reason, and its error message (or its last message)."""

    async def converse() -> tuple[int, str, Any]:
        last = None
        async with connect(ws_url(farm, endpoint, **query), max_size=None) as ws:
            for message in messages:
                try:
                    await ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
                except websockets.ConnectionClosed:
                    break
            try:
                async for raw in ws:
                    last = _telling(last, json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            assert ws.close_code is not None
            return ws.close_code, ws.close_reason or "", last

    return asyncio.run(asyncio.wait_for(converse(), 120))


BAD = {
    "unknown field": ([{"text": " "}, {"text": "Hi. ", "shout": True}], 1008, "invalid_message", "shout"),
    "text before init": ([{"text": "Hello there. "}], 1008, "init_required", "first message"),
    "not JSON": (["{text"], 1008, "invalid_message", "JSON"),
    "JSON nested past the recursion limit": (["[" * 100_000 + "]" * 100_000], 1008, "invalid_message", "JSON"),
    "binary frame": ([{"text": " "}, b"\x00\x01"], 1003, "binary_frame", "binary"),
    "a voice that is no one's": ([{"text": " "}], 1008, "unknown_speaker", "Nobody"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_messages_get_a_clear_error_and_close_code_and_the_farm_goes_on(farm: Farm, case: str) -> None:
    messages, code, error, words = BAD[case]
    voice = "Nobody At All — ünïcödé ✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓" if "no one" in case else DEV_SPEAKER
    close_code, reason, last = _refused(farm, messages) if voice == DEV_SPEAKER else _refused_voice(farm, voice)
    assert close_code == code, (close_code, reason, last)
    if code != 1003 or last is not None:
        assert last is not None and last["error"] == error and words in last["message"], last
        assert last["code"] == code
    assert reason
    _farm_still_speaks(farm)


def _refused_voice(farm: Farm, voice: str) -> tuple[int, str, Any]:
    async def converse() -> tuple[int, str, Any]:
        last = None
        async with connect(ws_url(farm, voice=voice)) as ws:
            await ws.send(json.dumps({"text": " "}))
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    last = _telling(last, json.loads(raw))
            assert ws.close_code is not None
            return ws.close_code, ws.close_reason or "", last

    return asyncio.run(asyncio.wait_for(converse(), 120))


def _farm_still_speaks(farm: Farm) -> None:
    """A request of another client right after: served, complete."""
    response = requests.post(
        farm.url("/tts"),
        json={"text": "Still here.", "language": "en", "speaker_id": DEV_SPEAKER, "response_format": "pcm"},
        timeout=300,
    )
    assert response.status_code == 200
    assert len(response.content) // 2 == _job(farm, response.headers["X-Session-Id"])["progress"]["audio_samples"]


def test_a_huge_frame_and_a_thousand_contexts_are_refused(farm: Farm) -> None:
    code, reason, _ = _refused(farm, [{"text": " "}, json.dumps({"text": "x" * (10 << 20)})])
    assert code == 1009 and "big" in reason
    many = [{"text": " ", "context_id": f"c{n}"} for n in range(1000)]
    code, reason, last = _refused(farm, many, "multi-stream-input")
    assert code == 1008 and last["error"] == "max_active_conversations", (code, reason, last)
    # The five contexts it did open were ended with it: cancelled, nothing left running.
    wait_for(lambda: _active_agent_jobs(farm) == 0 or None, 30, "the refused socket's contexts to end")
    _farm_still_speaks(farm)


def _active_agent_jobs(farm: Farm) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(farm.database_url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM jobs WHERE origin = 'agent' AND state IN ('queued', 'running')")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _opened_and_ended(
    farm: Farm, headers: dict[str, str] | None = None, first: dict[str, Any] | None = None, **query: Any
) -> tuple[int, Any]:
    """A context opened and ended at once (no text): the close code and the last message (its isFinal)."""

    async def converse() -> tuple[int, Any]:
        last = None
        async with connect(ws_url(farm, **query), additional_headers=headers or {}) as ws:
            await ws.send(json.dumps(first or {"text": " "}))
            await ws.send(json.dumps({"text": ""}))
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    last = _telling(last, json.loads(raw))
            assert ws.close_code is not None
            return ws.close_code, last

    return asyncio.run(asyncio.wait_for(converse(), 120))


def test_api_keys_work_as_elevenlabs_clients_send_them(keyed_farm: Farm) -> None:
    alice, bob = keyed_farm.api_keys["alice"], keyed_farm.api_keys["bob"]
    ways: list[tuple[dict[str, str], dict[str, Any] | None, dict[str, Any]]] = [
        ({"xi-api-key": alice}, None, {}),
        ({"Authorization": f"Bearer {alice}"}, None, {}),
        ({}, None, {"authorization": f"Bearer {alice}"}),
        ({}, {"text": " ", "xi_api_key": alice}, {}),
    ]
    for headers, first, query in ways:
        code, last = _opened_and_ended(keyed_farm, headers, first, **query)
        assert code == 1000 and last["isFinal"] is True, (headers, first, query, last)
        session = last["sessionId"]
        mine = requests.get(keyed_farm.url(f"/jobs/{session}"), headers={"xi-api-key": alice}, timeout=30)
        assert mine.status_code == 200 and mine.json()["state"] == "succeeded"
        theirs = requests.get(keyed_farm.url(f"/jobs/{session}"), headers={"xi-api-key": bob}, timeout=30)
        assert theirs.status_code == 404
    code, last = _opened_and_ended(keyed_farm)
    assert code == 1008 and last["error"] == "api_key_required"
    with pytest.raises(websockets.InvalidStatus) as refused:
        _opened_and_ended(keyed_farm, {"xi-api-key": "not-a-key"})
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["detail"]["status"] == "invalid_api_key"
    # Another tenant's voice is no voice at all.
    latents = {"gpt_cond_latent": [[0.02] * 64] * 32, "speaker_embedding": [0.03] * 512}
    saved = requests.post(keyed_farm.url("/save_voice/alices"), json=latents, headers={"xi-api-key": alice}, timeout=30)
    assert saved.status_code == 201, saved.text
    code, last = _opened_and_ended(keyed_farm, {"xi-api-key": bob}, voice="alices")
    assert code == 1008 and last["error"] == "unknown_speaker"
    code, last = _opened_and_ended(keyed_farm, {"xi-api-key": alice}, voice="alices")
    assert code == 1000 and last["isFinal"] is True


def test_a_context_whose_api_process_dies_ends_cancelled_saying_why(farm_with: Any) -> None:
    from tests.farms import SHORT_LEASES

    farm = farm_with(**SHORT_LEASES)

    async def open_and_leave() -> str:
        async with connect(ws_url(farm)) as ws:
            await ws.send(json.dumps({"text": " "}))
            await ws.send(json.dumps({"text": "A sentence that is said. And a half"}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("sessionId"):
                    session = str(message["sessionId"])
                    break
            assert farm.api is not None
            os.killpg(farm.api.pid, signal.SIGKILL)  # the API process dies with the socket open
            farm.api.wait(10)
            return session

    session = asyncio.run(asyncio.wait_for(open_and_leave(), 120))
    state = wait_for(lambda: _state(farm, session, ("cancelled", "failed", "succeeded")), 60, "the job to end")
    assert state == (
        "cancelled",
        "its text was still being written when its writer (a voice agent's connection) was lost",
    )
    farm.start_api()
    farm.wait_for_api()


def _state(farm: Farm, job_id: str, ended: tuple[str, ...]) -> tuple[str, str | None] | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(farm.database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT state, error FROM jobs WHERE id = :id"), {"id": job_id}).one()
    finally:
        engine.dispose()
    return (row.state, row.error) if row.state in ended else None


def _tts(farm: Farm, endpoint: str, text: str, voice: str = DEV_SPEAKER, **query: Any) -> requests.Response:
    return requests.post(
        farm.url(f"/v1/text-to-speech/{quote(voice)}{endpoint}"),
        params={"output_format": "pcm_24000", **query},
        # The farm's extension bounds each segment's audio: these tests are about timing, not length.
        json={
            "text": text,
            "model_id": "eleven_flash_v2_5",
            "voice_settings": {"stability": 0.5},
            "max_new_tokens": 40,
        },
        timeout=300,
    )


def _http_timing(alignment: dict[str, Any]) -> list[tuple[str, float, float]]:
    return list(
        zip(
            alignment["characters"],
            alignment["character_start_times_seconds"],
            alignment["character_end_times_seconds"],
            strict=True,
        )
    )


def test_http_text_to_speech_with_timestamps_whole_and_streamed(farm: Farm) -> None:
    whole = _tts(farm, "/with-timestamps", TEXT)
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    job = _job(farm, whole.headers["X-Session-Id"])
    audio = base64.b64decode(answer["audio_base64"])
    assert len(audio) // 2 == job["progress"]["audio_samples"]
    duration = len(audio) / 2 / SAMPLE_RATE
    written = _http_timing(answer["alignment"])
    assert "".join(ch for ch, _, _ in written) == TEXT and answer["alignment_source"] == "estimate"
    said = _http_timing(answer["normalized_alignment"])
    assert len(said) == sum(s["characters"] for s in job["segments"])
    for timing in (written, said):
        assert [start for _, start, _ in timing] == sorted(start for _, start, _ in timing)
        assert timing[0][1] == 0 and abs(timing[-1][2] - duration) < 0.002

    streamed = _tts(farm, "/stream/with-timestamps", TEXT)
    assert streamed.status_code == 200 and streamed.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in streamed.text.splitlines() if line]
    assert len(lines) > 1  # one per chunk, as made
    pieces = b"".join(base64.b64decode(line["audio_base64"]) for line in lines)
    assert len(pieces) // 2 == _job(farm, streamed.headers["X-Session-Id"])["progress"]["audio_samples"]
    chars = "".join(ch for line in lines if line["alignment"] for ch in line["alignment"]["characters"])
    assert chars == TEXT


def test_http_text_to_speech_audio_in_an_elevenlabs_format_and_errors_in_both_shapes(farm: Farm) -> None:
    response = _tts(farm, "/stream", "Sixteen thousand a second.", output_format="pcm_16000")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("audio/pcm")
    made = _job(farm, response.headers["X-Session-Id"])["progress"]["audio_samples"]
    assert len(response.content) // 2 == round(made * 16000 / SAMPLE_RATE)
    plain = _tts(farm, "", "An mp3 by default.", output_format="mp3_44100_128")
    assert plain.status_code == 200 and plain.headers["Content-Type"] == "audio/mpeg"
    assert _decoded(plain.content, "mp3_44100_128")[0] == 44100
    unknown = _tts(farm, "", "Hello.", voice="Nobody At All")
    assert unknown.status_code == 400
    body = unknown.json()
    assert body["detail"]["status"] == "unknown_speaker" and body["error"]["code"] == "unknown_speaker"
    bad_format = _tts(farm, "", "Hello.", output_format="pcm_12345")
    assert bad_format.status_code == 400 and "output_format" in bad_format.json()["detail"]["message"]


def test_voices_are_listed_in_elevenlabs_shape(farm: Farm) -> None:
    latents = {"gpt_cond_latent": [[0.02] * 64] * 32, "speaker_embedding": [0.03] * 512, "name": "Narrator"}
    assert requests.post(farm.url("/save_voice/narrator"), json=latents, timeout=30).status_code == 201
    voices = requests.get(farm.url("/v1/voices"), timeout=30).json()["voices"]
    by_id = {v["voice_id"]: v for v in voices}
    assert by_id[DEV_SPEAKER]["category"] == "premade" and by_id["narrator"]["category"] == "cloned"
    assert by_id["narrator"]["name"] == "Narrator" and by_id["alloy"]["labels"]["alias_of"]
    one = requests.get(farm.url("/v1/voices/narrator"), timeout=30)
    assert one.status_code == 200 and one.json()["voice_id"] == "narrator"
    missing = requests.get(farm.url("/v1/voices/nobody"), timeout=30)
    assert missing.status_code == 404 and missing.json()["detail"]["status"] == "not_found"
    # And the saved voice speaks on the socket, named in the path.
    code, last = _opened_and_ended(farm, voice="narrator")
    assert code == 1000 and last["isFinal"] is True


def test_the_python_client_pipes_tokens_into_a_speaking_session_and_its_example_runs(farm: Farm, tmp_path: Any) -> None:
    from xtts_client import XTTSClient

    async def converse() -> tuple[bytes, str, str | None]:
        audio = bytearray()
        async with XTTSClient(farm.base_url).speak_stream(DEV_SPEAKER) as session:

            async def write() -> None:
                for word in TEXT.split():
                    await session.send(word + " ")
                    await asyncio.sleep(0.05)
                await session.end()

            writer = asyncio.create_task(write())
            async for chunk in session:
                audio += chunk
            await writer
        return bytes(audio), session.spoken, session.session_id

    audio, spoken, session = asyncio.run(asyncio.wait_for(converse(), 300))
    assert spoken == TEXT and session is not None
    assert len(audio) // 2 == _job(farm, session)["progress"]["audio_samples"]
    assert len(audio) == sum(len(_spoken_alone(farm, s)) for s in SENTENCES)

    out = tmp_path / "reply.pcm"
    ran = subprocess.run(
        [sys.executable, str(ROOT / "client" / "examples" / "agent_pipe.py"), "--url", farm.base_url, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "client")},  # as `pip install ./client` makes it importable
    )
    assert ran.returncode == 0, ran.stderr
    session_id = ran.stdout.split("session ")[-1].strip()
    assert out.stat().st_size // 2 == _job(farm, session_id)["progress"]["audio_samples"] > 0


def test_a_piece_with_nothing_to_say_is_left_out_and_the_context_goes_on(farm: Farm) -> None:
    async def converse() -> Heard:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm)) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            await ws.send(json.dumps({"text": " "}))
            await ws.send(json.dumps({"text": "```\nprint(42)\n```\n", "flush": True}))  # a code block: not said
            await ws.send(json.dumps({"text": SENTENCES[2]}))
            await ws.send(json.dumps({"text": ""}))
            await asyncio.wait_for(receiver, 120)
        return heard[""]

    heard = asyncio.run(converse())
    assert heard.final and _job(farm, str(heard.session))["state"] == "succeeded"
    assert len(heard.audio) == len(_spoken_alone(farm, SENTENCES[2]))


def test_a_session_cancelled_over_http_ends_its_context_and_its_name_opens_a_new_one(farm: Farm) -> None:
    long = "This sentence runs on for a good while so that it is still being spoken when it is cancelled. "

    async def converse() -> tuple[str, dict[str, Heard]]:
        heard: dict[str, Heard] = {}
        async with connect(ws_url(farm, "multi-stream-input")) as ws:
            receiver = asyncio.create_task(_receive(ws, heard))
            await ws.send(json.dumps({"text": long, "context_id": "a", "flush": True}))
            await asyncio.wait_for(_until_audio(heard, "a"), 120)
            first = str(heard["a"].session)
            cancelled = await asyncio.to_thread(requests.delete, farm.url(f"/jobs/{first}"), timeout=30)
            assert cancelled.status_code == 200
            await asyncio.wait_for(_until_final(heard, "a"), 60)
            del heard["a"]
            await ws.send(json.dumps({"text": "Said anew. ", "context_id": "a", "flush": True}))
            await ws.send(json.dumps({"context_id": "a", "close_context": True}))
            await asyncio.wait_for(_until_final(heard, "a"), 120)
            await ws.send(json.dumps({"close_socket": True}))
            await asyncio.wait_for(receiver, 60)
        return first, heard

    first, heard = asyncio.run(converse())
    assert _job(farm, first)["state"] == "cancelled"
    second = _job(farm, str(heard["a"].session))
    assert second["state"] == "succeeded" and str(heard["a"].session) != first
    assert len(heard["a"].audio) == len(_spoken_alone(farm, "Said anew. "))
