"""Decoding uploaded reference recordings: real ffmpeg on files made here, hostile inputs included.

No farm is started: these call voices_store.uploads directly, so they run in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shared.errors import FarmError
from tests.listeners import Listeners
from tools.localfarm import ROOT
from voices_store.uploads import (
    CLONE_SAMPLE_RATE,
    DECODE_TIME_LIMIT_SECONDS,
    DecodeTimeout,
    NotAudio,
    Reference,
    ReferenceTooLong,
    TooMuchReferenceAudio,
    UnusableAudio,
    UploadTooLarge,
    decode_reference,
    decode_references,
    ffmpeg_command,
    run_bounded,
    sniff_demuxer,
    sound_seconds,
)

MB = 2**20


def _decode(
    data: bytes,
    filename: str = "ref",
    *,
    max_bytes: int = 20 * MB,
    max_seconds: float = 20.0,
    time_limit: float = DECODE_TIME_LIMIT_SECONDS,
) -> Reference:
    """Limits as the API passes them: MAX_UPLOAD_MB=20 (its default), MAX_REFERENCE_SECONDS=20 (the test farm's)."""
    return decode_reference(filename, data, max_bytes=max_bytes, max_seconds=max_seconds, time_limit=time_limit)


def _all_child_pids() -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            children.append(int(entry))
    return children


_PREEXISTING: set[int] = set()


@pytest.fixture(autouse=True)
def _note_preexisting_children() -> None:
    """Children that live across tests (the session's redis-server, started by another module's fixture) are not
    the decoder's: only what appears during a test counts."""
    _PREEXISTING.clear()
    _PREEXISTING.update(_all_child_pids())


def _child_pids() -> list[int]:
    """Processes whose parent is this one, zombies included, started during the test: what a decode must never
    leave behind."""
    return [pid for pid in _all_child_pids() if pid not in _PREEXISTING]


def _id3(payload: bytes = b"") -> bytes:
    """An ID3v2.4 tag with one title frame, as MP3s (and some FLACs) start with."""
    frame = b"TIT2" + len(b"\x03title").to_bytes(4, "big") + b"\x00\x00" + b"\x03title"
    return b"ID3\x04\x00\x00" + len(frame).to_bytes(4, "big") + frame + payload


def _hostile(kind: str, found: Listeners, local_audio: Path) -> bytes:
    segments = f"{found.http_url}/seg.ts", f"{found.silent_url}/seg.ts"
    playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n" + "".join(f"#EXTINF:10,\n{url}\n" for url in segments)
    local = (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:{found.fifo}\n#EXTINF:10,\n{local_audio}\n"
        "#EXT-X-ENDLIST\n"
    )
    payloads = {
        "hls playlist": playlist + "#EXT-X-ENDLIST\n",
        "hls master playlist": f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\n{found.silent_url}/v.m3u8\n"
        f"#EXT-X-STREAM-INF:BANDWIDTH=999\n{found.http_url}/v.m3u8\n",
        "hls of local files": local,
        "ffconcat script": f"ffconcat version 1.0\nfile '{found.http_url}/a.wav'\nfile 'file:{found.fifo}'\n"
        f"file '{local_audio}'\n",
        "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n",
    }
    if kind in payloads:
        return payloads[kind].encode()
    disguised = {"mp3 frame header, then a playlist": b"\xff\xfb\x90\x64\n", "id3 tag, then a playlist": _id3()}
    return disguised[kind] + playlist.encode()


HOSTILE = (
    "hls playlist",
    "hls master playlist",
    "hls of local files",
    "ffconcat script",
    "sdp",
    "mp3 frame header, then a playlist",
    "id3 tag, then a playlist",
)


@pytest.mark.parametrize("filename", ["voice.mp3", "voice.m3u8"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_playlists_and_scripts_are_refused_without_reading_anything_else(
    kind: str, filename: str, listeners: Listeners, make_audio, tmp_path: Path
) -> None:
    local_audio = tmp_path / "local.wav"
    local_audio.write_bytes(make_audio("wav", freq=240))  # decodable: had ffmpeg opened it, the upload would pass
    data = _hostile(kind, listeners, local_audio)
    started = time.monotonic()
    with pytest.raises(NotAudio) as refused:
        _decode(data, filename)
    elapsed = time.monotonic() - started
    time.sleep(0.05)  # let a late connection show up in the listeners before looking
    assert elapsed < 5
    assert refused.value.status == 400 and refused.value.code == "not_audio"
    assert listeners.untouched(), (listeners.requests, listeners.connections, listeners.fifo_opened)
    assert _child_pids() == []


def test_the_listeners_do_notice_a_reader(listeners: Listeners) -> None:
    """The detectors above are live: pydub's ffmpeg command (`-i cache:pipe:0`, ffmpeg guessing the format) does
    fetch a playlist's URLs and open its local files: the hole this module closes."""
    for segment in (f"{listeners.http_url}/seg.ts", f"file:{listeners.fifo}"):
        playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{segment}\n#EXT-X-ENDLIST\n".encode()
        run_bounded(
            ["ffmpeg", "-nostdin", "-loglevel", "quiet", "-i", "cache:pipe:0", "-f", "null", "-"],
            playlist,
            time_limit=10,
            max_output_bytes=MB,
        )
    assert listeners.requests == ["/seg.ts"]
    assert listeners.fifo_opened


def _with_one_lock(command: list[str], lock: str) -> list[str]:
    """Our ffmpeg command with one of its two locks taken away, to show that the other holds alone."""
    command = list(command)
    forced = command.index("-f")
    if lock == "format whitelist":  # no forced demuxer: ffmpeg probes, and finds the playlist
        del command[forced : forced + 2]
    else:  # the HLS demuxer itself forced and admitted: only the protocol whitelist stands
        command[forced + 1] = "hls"
        listed = command.index("-format_whitelist") + 1
        command[listed] = "hls," + command[listed]
    return command


@pytest.mark.parametrize("segment", ["http", "silent", "fifo"])
@pytest.mark.parametrize("lock", ["format whitelist", "protocol whitelist"])
@pytest.mark.parametrize("demuxer", ["mp3", "mov"])  # mov reads through ffmpeg's cache protocol: another whitelist
def test_each_lock_of_the_command_holds_alone(demuxer: str, lock: str, segment: str, listeners: Listeners) -> None:
    url = {
        "http": f"{listeners.http_url}/seg.ts",
        "silent": f"{listeners.silent_url}/seg.ts",
        "fifo": f"file:{listeners.fifo}",
    }[segment]
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}\n#EXT-X-ENDLIST\n".encode()
    run = run_bounded(_with_one_lock(ffmpeg_command(demuxer, 20.0), lock), playlist, time_limit=5, max_output_bytes=MB)
    time.sleep(0.05)
    assert not run.timed_out and run.returncode != 0 and run.stdout == b""
    assert b"not on whitelist" in run.stderr_tail
    assert listeners.untouched(), (listeners.requests, listeners.connections, listeners.fifo_opened)


# --- small files that decode to hours ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hours_of_silence(lavfi_audio) -> dict[str, bytes]:
    """About 2 MB of FLAC (3 h at 8 kHz) and 7 MB of WAV (2 h of 8-bit PCM at 1 kHz): 476 MB and 318 MB decoded."""
    return {
        "flac": lavfi_audio("3h.flac", "anullsrc=r=8000:cl=mono", "-t", "10800", "-c:a", "flac"),
        "wav": lavfi_audio("2h.wav", "anullsrc=r=1000:cl=mono", "-t", "7200", "-c:a", "pcm_u8"),
    }


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_hours_long_files_are_stopped_at_the_limit_quickly_and_in_little_memory(fmt: str, hours_of_silence) -> None:
    data = hours_of_silence[fmt]
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ReferenceTooLong) as refused:
            _decode(data, f"long.{fmt}")
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.code == "unusable_audio" and "limited to 20 s" in refused.value.message
    assert elapsed < 2
    assert peak < 4 * MB  # the limit's worth of 16-bit samples (0.9 MB), twice at most; never the decoded hours
    assert _child_pids() == []


_RSS_PROBE = """
import resource, sys, time
from voices_store.uploads import ReferenceTooLong, decode_reference
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    decode_reference("long", data, max_bytes=len(data), max_seconds=20.0)
except ReferenceTooLong:
    pass
else:
    sys.exit("not refused")
elapsed = time.monotonic() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, elapsed)
"""


def test_peak_rss_of_the_process_and_of_ffmpeg_stay_small(hours_of_silence, tmp_path: Path) -> None:
    """Measured in a fresh interpreter, whose peak RSS is not already raised by other tests (and whose only child is
    the decoder)."""
    path = tmp_path / "3h.flac"
    path.write_bytes(hours_of_silence["flac"])
    probe = subprocess.run(  # noqa: PLW1510 - the exit status is asserted below
        [sys.executable, "-c", _RSS_PROBE, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert probe.returncode == 0, probe.stderr
    before_kb, after_kb, ffmpeg_kb, elapsed = probe.stdout.split()
    print(
        f"python peak RSS {int(before_kb) // 1024} -> {int(after_kb) // 1024} MB, "
        f"ffmpeg peak RSS {int(ffmpeg_kb) // 1024} MB, {float(elapsed):.3f} s"
    )
    assert int(after_kb) - int(before_kb) < 32 * 1024  # decoded whole, 3 h would be 476 MB of int16, 952 MB float32
    assert int(ffmpeg_kb) < 200 * 1024


# --- decoders that do not finish ---------------------------------------------------------------------------------


def test_a_decode_past_its_time_limit_is_killed_and_reaped(hours_of_silence) -> None:
    started = time.monotonic()
    with pytest.raises(DecodeTimeout) as refused:
        _decode(hours_of_silence["flac"], time_limit=0.001)
    assert time.monotonic() - started < 1
    assert refused.value.status == 400 and "could not be decoded within 0.001 s" in refused.value.message
    assert _child_pids() == []


def test_a_hanging_child_is_killed_at_the_deadline_even_with_its_stdin_full() -> None:
    """`sleep` reads nothing: 4 MB of stdin fill its pipe, and the deadline must still hold."""
    started = time.monotonic()
    run = run_bounded(["sleep", "30"], bytes(4 * MB), time_limit=0.5, max_output_bytes=MB)
    elapsed = time.monotonic() - started
    assert run.timed_out and run.returncode is None
    assert 0.5 <= elapsed < 2
    assert _child_pids() == []


def test_pipes_are_served_together_so_big_inputs_and_outputs_never_deadlock() -> None:
    data = os.urandom(8 * MB)  # far beyond a pipe's 64 KB buffer, in and out at once
    run = run_bounded(["cat"], data, time_limit=20, max_output_bytes=16 * MB)
    assert run.returncode == 0 and run.stdout == data and not run.timed_out
    flood = "import sys; sys.stderr.write('x' * 10_000_000); sys.stderr.flush(); sys.stdout.write('done')"
    run = run_bounded([sys.executable, "-c", flood], b"", time_limit=20, max_output_bytes=MB)
    assert run.returncode == 0 and run.stdout == b"done" and len(run.stderr_tail) <= 4096


def test_output_past_the_cap_stops_the_child() -> None:
    run = run_bounded(["cat", "/dev/zero"], b"", time_limit=20, max_output_bytes=MB)
    assert run.output_capped and not run.timed_out and run.returncode is None
    assert MB < len(run.stdout) <= MB + 65536
    assert _child_pids() == []


# --- ordinary recordings -----------------------------------------------------------------------------------------


def _dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * CLONE_SAMPLE_RATE / len(samples))


NORMAL = [  # (format, rate, channels)
    ("wav", 22050, 1),
    ("wav", 44100, 2),
    ("wav", 8000, 1),
    ("mp3", 44100, 2),
    ("mp3", 16000, 1),
    ("flac", 48000, 2),
    ("flac", 96000, 1),
    ("ogg", 48000, 2),
    ("ogg", 16000, 1),  # Opus
    ("m4a", 44100, 2),
    ("m4a", 16000, 1),
    ("webm", 48000, 1),  # Opus in WebM
]
LOSSLESS = {"wav", "flac"}


@pytest.mark.parametrize(("fmt", "rate", "channels"), NORMAL)
def test_recordings_decode_to_mono_float32_at_22050(fmt: str, rate: int, channels: int, make_audio) -> None:
    reference = _decode(make_audio(fmt, seconds=3.0, rate=rate, channels=channels, freq=440), f"ref.{fmt}")
    _assert_tone(reference, seconds=3.0, freq=440, exact=fmt in LOSSLESS)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("vorbis.ogg", ("-ac", "2", "-c:a", "libvorbis")),
        ("adts.aac", ("-c:a", "aac", "-f", "adts")),
        ("opus.webm", ("-ac", "2", "-c:a", "libopus")),
        ("faststart.m4a", ("-c:a", "aac", "-movflags", "+faststart")),
        ("pcm24.wav", ("-c:a", "pcm_s24le", "-ac", "6")),
    ],
)
def test_other_codecs_and_layouts(name: str, args: tuple[str, ...], lavfi_audio) -> None:
    data = lavfi_audio(name, "sine=frequency=440:sample_rate=44100:duration=3", *args)
    _assert_tone(_decode(data, name), seconds=3.0, freq=440, exact=name.endswith(".wav"))


def test_an_id3_tag_before_flac_and_mp3(make_audio) -> None:
    for fmt in ("flac", "mp3"):
        data = _id3(make_audio(fmt, seconds=3.0, rate=44100, freq=440))
        assert sniff_demuxer(data) == fmt
        _assert_tone(_decode(data, f"tagged.{fmt}"), seconds=3.0, freq=440, exact=fmt == "flac")


def test_a_long_m4a_with_its_index_at_the_end(lavfi_audio) -> None:
    """ffmpeg's mov demuxer seeks back to the audio after reading the index at the end: a plain pipe cannot."""
    data = lavfi_audio("long.m4a", "anoisesrc=r=48000:d=15:a=0.3", "-ac", "2", "-c:a", "aac", "-b:a", "256k")
    assert len(data) > 256 * 1024  # more than ffmpeg's read buffers would hide
    reference = _decode(data, "long.m4a")
    assert abs(reference.seconds - 15.0) < 0.1


def _assert_tone(reference: Reference, *, seconds: float, freq: float, exact: bool) -> None:
    samples = reference.samples
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(reference.seconds - seconds) < (0.01 if exact else 0.1)
    assert np.abs(samples).max() <= 1.0
    assert abs(_dominant_frequency(samples) - freq) < 3
    assert reference.sound_seconds > seconds - 0.2


def test_a_recording_at_the_limit_passes_and_just_over_it_does_not(lavfi_audio) -> None:
    at_limit = lavfi_audio("20s.wav", "sine=frequency=300:sample_rate=44100:duration=20")
    assert abs(_decode(at_limit).seconds - 20.0) < 0.01
    over = lavfi_audio("20.2s.wav", "sine=frequency=300:sample_rate=44100:duration=20.2")
    with pytest.raises(ReferenceTooLong):
        _decode(over)


# --- recordings that cannot serve as references ------------------------------------------------------------------


def test_silence_and_too_little_sound_are_unusable(make_audio) -> None:
    with pytest.raises(UnusableAudio, match="silent"):
        _decode(make_audio("wav", silent=True))
    with pytest.raises(UnusableAudio, match=r"at least 0\.5 s"):
        _decode(make_audio("wav", seconds=0.3))
    with pytest.raises(UnusableAudio, match=r"at least 0\.5 s") as late:
        _decode(make_audio("wav", seconds=0.3, lead_silence=3.0))
    assert late.value.code == "unusable_audio"


def test_short_pauses_count_as_sound_and_long_ones_do_not() -> None:
    rate = CLONE_SAMPLE_RATE
    tone = 0.1 * np.sin(2 * np.pi * 300 * np.arange(int(0.2 * rate)) / rate).astype(np.float32)

    def with_pauses(pause: float) -> np.ndarray:
        gap = np.zeros(int(pause * rate), dtype=np.float32)
        return np.concatenate([tone, gap, tone, gap, tone])

    assert sound_seconds(with_pauses(0.05)) == pytest.approx(0.7, abs=0.02)  # pydub: under 100 ms is no silence
    assert sound_seconds(with_pauses(0.5)) == pytest.approx(0.6, abs=0.02)
    assert sound_seconds(np.full(rate, 10 ** (-55 / 20), dtype=np.float32)) == 0  # a steady -55 dBFS is silence
    assert sound_seconds(np.zeros(100, dtype=np.float32)) == 0


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("random.wav", np.random.default_rng(7).bytes(64 * 1024)),
        ("image.mp3", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(4096)),
        ("notes.wav", b"this is a text file, not audio\n" * 100),
        ("riff-garbage.wav", b"RIFF\x24\x00\x00\x00WAVE" + np.random.default_rng(8).bytes(4096)),
        ("mp3-garbage.mp3", b"\xff\xfb\x90\x64" + np.random.default_rng(9).bytes(64 * 1024)),
        ("mp4-garbage.m4a", b"\x00\x00\x00\x20ftypisom" + np.random.default_rng(10).bytes(4096)),
    ],
)
def test_non_audio_is_refused(name: str, data: bytes) -> None:
    with pytest.raises(NotAudio, match="not audio") as refused:
        _decode(data, name)
    assert refused.value.status == 400


def test_empty_and_oversized_files(make_audio) -> None:
    with pytest.raises(UnusableAudio, match="empty") as empty:
        _decode(b"")
    assert empty.value.code == "unusable_audio"
    with pytest.raises(UploadTooLarge, match="MAX_UPLOAD_MB=1") as large:
        _decode(make_audio("wav", seconds=30, rate=22050), max_bytes=MB)
    assert large.value.status == 413


def test_a_header_without_samples(lavfi_audio) -> None:
    data = lavfi_audio("empty.wav", "sine=frequency=300:sample_rate=22050:duration=1", "-t", "0")
    with pytest.raises(UnusableAudio, match="no audio samples"):
        _decode(data)


# --- a request's references together -----------------------------------------------------------------------------


def _parts(data: bytes, count: int) -> list[tuple[str, bytes]]:
    return [(f"part{i}.wav", data) for i in range(count)]


def test_a_request_within_its_caps(make_audio) -> None:
    references = decode_references(
        _parts(make_audio("wav", seconds=3.0, freq=330), 3),
        max_bytes=MB,
        max_seconds_each=20,
        max_parts=3,
        max_total_seconds=10,
    )
    assert [ref.filename for ref in references] == ["part0.wav", "part1.wav", "part2.wav"]
    assert sum(ref.seconds for ref in references) == pytest.approx(9.0, abs=0.01)


def test_too_many_parts_are_refused_before_any_decoding(make_audio) -> None:
    parts = _parts(make_audio("wav", seconds=3.0, freq=330), 4)
    with pytest.raises(TooMuchReferenceAudio, match="at most 3") as refused:
        decode_references(
            parts, max_bytes=MB, max_seconds_each=20, max_parts=3, max_total_seconds=60, time_limit=0.0
        )  # no time to decode anything: the count alone refuses
    assert refused.value.status == 413 and refused.value.code == "too_much_reference_audio"
    read: list[int] = []

    def lazily() -> Iterator[tuple[str, bytes]]:
        for i, part in enumerate(parts):
            read.append(i)
            yield part

    with pytest.raises(TooMuchReferenceAudio, match="at most 3"):
        decode_references(lazily(), max_bytes=MB, max_seconds_each=20, max_parts=3, max_total_seconds=60)
    assert read == [0, 1, 2, 3]  # stopped at the first surplus part, before decoding it


def test_many_long_parts_stop_at_the_total(lavfi_audio) -> None:
    """Parts of 60 s each, 90 s in all at most: the second part is decoded only up to the 30 s left, then refused."""
    minute = lavfi_audio("60s.wav", "sine=frequency=300:sample_rate=8000:duration=60")
    started = time.monotonic()
    with pytest.raises(TooMuchReferenceAudio, match="add up to more than 90 s"):
        decode_references(_parts(minute, 10), max_bytes=2 * MB, max_seconds_each=60, max_parts=10, max_total_seconds=90)
    assert time.monotonic() - started < 3
    with pytest.raises(ReferenceTooLong, match="limited to 20 s"):  # each part's own limit is reported as before
        decode_references(_parts(minute, 10), max_bytes=2 * MB, max_seconds_each=20, max_parts=10, max_total_seconds=90)
    assert _child_pids() == []


def test_a_request_past_its_time_limit(make_audio) -> None:
    with pytest.raises(DecodeTimeout):
        decode_references(
            _parts(make_audio("wav", seconds=3.0, freq=330), 2),
            max_bytes=MB,
            max_seconds_each=20,
            max_parts=3,
            max_total_seconds=60,
            time_limit=0.0,
        )
    assert issubclass(DecodeTimeout, FarmError) and DecodeTimeout.status == 400
