"""The client's pieces that need no farm: its Server-Sent Events parser, the automatic resume of a dropped job
stream from its cursor, WAV framing, formats, errors. The events are made by the API's own encoder
(api/delivery.py), so the parser is checked against exactly what the farm sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from xtts_client import FarmError, StreamBroken
from xtts_client.cli import main
from xtts_client.formats import answered_format, format_for
from xtts_client.output import AudioOutput
from xtts_client.resume import AudioEvent, Dropped, EndEvent, RetryPolicy, follow
from xtts_client.sse import SSEParser
from xtts_client.wav import WavReader, wav_header

from api.delivery import sse_audio, sse_error
from api.framing import sse_event
from shared.errors import AudioExpired
from shared.streams import Cursor
from tests.audio import read_wav
from tools.localfarm import free_port

# Two segments of three chunks each, distinct bytes in every chunk.
CHUNKS = [(Cursor(seg, seq), bytes([seg * 16 + seq]) * (100 + seq)) for seg in range(2) for seq in range(1, 4)]
WHOLE = b"".join(pcm for _, pcm in CHUNKS)


def farm_stream(cursor: str | None, end: bytes | None = None) -> bytes:
    """What GET /jobs/{id}/stream sends from `cursor` on (the farm's own encoder)."""
    after = Cursor.parse(cursor)
    body = b"".join(sse_audio(c, pcm) for c, pcm in CHUNKS if (c.segment, c.seq) > (after.segment, after.seq))
    return body + (end if end is not None else sse_event({"state": "succeeded"}, "end"))


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# --- the parser -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_parser_gives_the_same_events_however_the_bytes_are_cut(size: int) -> None:
    parser = SSEParser()
    events = [e for piece in pieces(farm_stream(None), size) for e in parser.feed(piece)]
    assert [e.event for e in events] == ["audio"] * 6 + ["end"]
    assert [e.id for e in events[:-1]] == [str(c) for c, _ in CHUNKS]
    assert parser.last_event_id == "1-3"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_parser_follows_the_sse_rules(newline: str) -> None:
    text = newline.join(
        [": a comment, ignored", "id: 7-1", "event: note", "data: first", "data:second", "retry: 10", "", ""]
    )
    parser = SSEParser()
    events = [e for piece in pieces(text.encode(), 1) for e in parser.feed(piece)]
    assert len(events) == 1
    assert (events[0].event, events[0].data, events[0].id) == ("note", "first\nsecond", "7-1")
    # A default type, and an event cut off before its blank line is never dispatched.
    assert [e.event for e in parser.feed(b"data: x\n\ndata: never")] == ["message"]


# --- resuming -------------------------------------------------------------------------------------------------
class FlakyFarm:
    """Serves the stream from any cursor; each planned fault applies to one connection, in order:
    an int cuts that connection after so many bytes (mid-event), "refuse" fails to connect, a FarmError is
    answered, "short" ends the body cleanly but without the end event."""

    def __init__(self, *faults: object) -> None:
        self.faults = list(faults)
        self.cursors: list[str | None] = []

    def open(self, cursor: str | None) -> Iterator[bytes]:
        self.cursors.append(cursor)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refuse":
            raise Dropped("connection refused")
        if isinstance(fault, FarmError):
            raise fault
        body = farm_stream(cursor)
        if fault == "short":
            body = body[: body.rindex(b"event: end")]
        return self._serve(body, fault if isinstance(fault, int) else None)

    @staticmethod
    def _serve(body: bytes, cut_at: int | None) -> Iterator[bytes]:
        yield from pieces(body[:cut_at] if cut_at is not None else body, 50)
        if cut_at is not None:
            raise Dropped("connection reset")


def run(farm: FlakyFarm, cursor: str | None = None, **kwargs: object) -> tuple[list[AudioEvent | EndEvent], list]:
    waits: list[float] = []
    reconnects: list[tuple] = []
    events = list(
        follow(
            farm.open,
            "job-1",
            cursor,
            on_reconnect=lambda *args: reconnects.append(args),
            sleep=waits.append,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return events, reconnects


def audio_of(events: list[AudioEvent | EndEvent]) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, AudioEvent))


def test_a_drop_mid_event_resumes_from_the_last_whole_event_byte_identical() -> None:
    first = farm_stream(None)
    cut = first.index(b"id: 0-3") + 30  # inside the third event: its bytes so far must be thrown away
    farm = FlakyFarm(cut, "refuse", "refuse")
    events, reconnects = run(farm)
    assert audio_of(events) == WHOLE
    assert [e.cursor for e in events if isinstance(e, AudioEvent)] == [str(c) for c, _ in CHUNKS]
    assert events[-1] == EndEvent("succeeded")
    assert farm.cursors == [None, "0-2", "0-2", "0-2"]
    assert [(cursor, attempt) for cursor, attempt, _ in reconnects] == [("0-2", 1), ("0-2", 2), ("0-2", 3)]


def test_many_drops_each_from_its_own_cursor() -> None:
    farm = FlakyFarm(*[300] * 10)  # every connection cut after about one event, while there is more to come
    events, reconnects = run(farm)
    assert audio_of(events) == WHOLE
    resumed = [tuple(map(int, c.split("-"))) for c in farm.cursors[1:]]
    assert farm.cursors[0] is None and len(resumed) >= 4 and resumed == sorted(set(resumed))
    assert all(attempt == 1 for _, attempt, _ in reconnects)  # each event received starts the count again


def test_resume_from_a_given_cursor_and_a_stream_that_stops_short() -> None:
    farm = FlakyFarm("short")
    events, reconnects = run(farm, "0-3")
    assert audio_of(events) == b"".join(pcm for c, pcm in CHUNKS if c.segment == 1)
    assert farm.cursors == ["0-3", "1-3"]
    assert "end event" in reconnects[0][2]


def test_busy_answers_are_retried_with_their_retry_after() -> None:
    busy = FarmError(503, "shutting_down", "this API process is shutting down")
    busy.retry_after = 2.0
    farm = FlakyFarm(busy)
    waits: list[float] = []
    events = list(follow(farm.open, "job-1", sleep=waits.append))
    assert audio_of(events) == WHOLE and waits == [2.0]


def test_final_answers_and_error_events_are_raised_not_retried() -> None:
    farm = FlakyFarm(FarmError(410, "audio_expired", "the audio of job job-1 is no longer kept"))
    with pytest.raises(FarmError) as gone:
        run(farm)
    assert gone.value.code == "audio_expired" and farm.cursors == [None]

    failing = FlakyFarm()
    failing.open = lambda cursor: iter([farm_stream(cursor, end=sse_error(AudioExpired("expired while you read")))])
    with pytest.raises(FarmError) as error_event:
        run(failing)
    assert (error_event.value.status, error_event.value.code) == (410, "audio_expired")
    assert error_event.value.message == "expired while you read"


def test_it_gives_up_after_its_attempts_naming_the_cursor() -> None:
    farm = FlakyFarm(300, *["refuse"] * 10)
    with pytest.raises(StreamBroken) as broken:
        run(farm, policy=RetryPolicy(attempts=3))
    assert broken.value.cursor == "0-1" and "connection refused" in str(broken.value)
    assert len(farm.cursors) == 4


def test_waits_double_up_to_a_cap() -> None:
    policy = RetryPolicy(attempts=10, first_wait=0.25, max_wait=5)
    assert [policy.wait(n) for n in range(1, 8)] == [0.25, 0.5, 1, 2, 4, 5, 5]
    assert policy.wait(1, retry_after=30) == 5


# --- WAV, formats, output, errors -------------------------------------------------------------------------------
def test_wav_reader_finds_the_data_past_other_chunks_byte_by_byte() -> None:
    header = wav_header(22050)
    extra = b"LIST" + (5).to_bytes(4, "little") + b"abcde\0"  # odd size: padded
    wav = header[:36] + extra + header[36:] + b"\x01\x02" * 50
    reader = WavReader()
    pcm = b"".join(reader.feed(piece) for piece in pieces(wav, 1))
    assert pcm == b"\x01\x02" * 50 and reader.sample_rate == 22050
    with pytest.raises(ValueError, match="not a WAV"):
        WavReader().feed(b"ID3" + b"\0" * 20)


def test_formats_from_the_extension() -> None:
    assert [format_for(name, None) for name in ("a.WAV", "a.mp3", "a.ogg", "a.opus", "b.pcm", "-", None)] == [
        "wav",
        "mp3",
        "opus",
        "opus",
        "pcm",
        "wav",
        "wav",
    ]
    assert format_for("a.mp3", "flac") == "flac"
    with pytest.raises(ValueError, match="--format"):
        format_for("speech.xyz", None)
    assert answered_format("audio/mpeg") == "mp3" and answered_format("audio/wav; codecs=1") == "wav"


def test_a_wav_file_states_its_exact_length_and_appears_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    output = AudioOutput(str(path), "wav")
    output.write_pcm(b"\x00\x01" * 300, 24000)
    output.write_pcm(b"\x02\x03" * 200, 24000)
    assert not path.exists()
    output.finish(24000)
    assert read_wav(path.read_bytes()) == (24000, 500, b"\x00\x01" * 300 + b"\x02\x03" * 200)
    failed = AudioOutput(str(tmp_path / "failed.wav"), "wav")
    failed.write_pcm(b"\x00\x00", 24000)
    failed.discard()
    assert list(tmp_path.iterdir()) == [path]


def response(status: int, body: bytes, **headers: str) -> requests.Response:
    made = requests.Response()
    made.status_code, made._content, made.headers = status, body, requests.structures.CaseInsensitiveDict(headers)
    return made


def test_farm_errors_carry_the_farm_body() -> None:
    body = {"error": {"status": 429, "code": "too_many_jobs", "message": "at most 2 jobs", "details": {"limit": 2}}}
    error = FarmError.from_response(response(429, json.dumps(body).encode(), **{"Retry-After": "10"}))
    assert (error.status, error.code, error.message, error.details, error.retry_after) == (
        429,
        "too_many_jobs",
        "at most 2 jobs",
        {"limit": 2},
        10.0,
    )
    proxy = FarmError.from_response(response(502, b"<html><body>Bad Gateway</body></html>"))
    assert (proxy.status, proxy.code) == (502, "http_error") and "Bad Gateway" in proxy.message


def test_cli_says_in_one_line_that_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "voices", "list"]) == 3
    err = capsys.readouterr().err
    assert err == f"xtts: error: cannot reach the farm at {url}: connection refused\n"


def test_cli_refuses_a_format_it_cannot_tell(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "say", "Hello", "--speaker", "x", "-o", "hello.xyz"]) == 2
    assert "--format" in capsys.readouterr().err
