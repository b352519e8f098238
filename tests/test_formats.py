"""Audio formats (`response_format`): the encoder itself (api/encoding.py, real ffmpeg, no farm), and every format
on /tts_stream, /tts and job audio against the running farm, decoded completely to the job's exact duration and
compared, sample by sample once the codec's delay is taken out, with the PCM the encoder was fed."""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from api.encoding import FORMATS, MEDIA_TYPES, encode, encode_file, ffmpeg_file_command
from tests.audio import (
    PRIMING,
    assert_duration_matches,
    decode,
    fidelity,
    flac_total_samples,
    mp3_info,
    read_wav,
    xtts_samples,
)
from tools.localfarm import Farm, tts_body

RATE = 24000
COMPRESSED = [f for f in FORMATS if f not in ("wav", "pcm")]
LOSSLESS = ("wav", "pcm", "flac")
# The least SNR each lossy codec's decoded audio keeps against the PCM it was fed (lossless formats: identical
# samples). Measured with ffmpeg 5.1 (Debian 12), streamed and complete files alike: on _tones(), mp3 26.0 dB,
# opus 34.5, aac 30.3; on the dev model's audio from the farm (60 tokens), mp3 20.8, aac 27.2, opus 0.2. Asserted
# 6 dB below (four times the noise power: another ffmpeg's encoder may do a little worse); silence, another signal,
# or audio shifted or cut short scores near 0 dB. Opus keeps nothing of the dev model's audio as a waveform: 98% of
# its energy is a DC offset, which Opus removes by design, the rest quiet white noise, which it codes as band energies;
# the farm's Opus is checked against this machine's encoding of the job's audio instead (_assert_job_audio).
MARGIN_DB = 6.0
TONES_SNR_DB = {"mp3": 26.0 - MARGIN_DB, "opus": 34.5 - MARGIN_DB, "aac": 30.3 - MARGIN_DB}
FARM_SNR_DB = {"mp3": 20.8 - MARGIN_DB, "opus": -math.inf, "aac": 27.2 - MARGIN_DB}


def _tone(samples: int, amplitude: int = 8000) -> bytes:
    t = np.arange(samples) / RATE
    return (np.sin(2 * np.pi * 330 * t) * amplitude).astype("<i2").tobytes()


def _tones(samples: int) -> bytes:
    """Five tones of unrelated frequencies under a slow swell: no lag but the true one lines it up with itself (one
    tone would, every period), and a codec must keep each partial to score well."""
    t = np.arange(samples) / RATE
    partials = ((3000, 220.0, 0.0), (2500, 331.7, 1.0), (2000, 587.3, 2.0), (1500, 1234.5, 0.5), (800, 2711.1, 1.3))
    mix = sum(a * np.sin(2 * np.pi * f * t + phase) for a, f, phase in partials)
    return (mix * (0.6 + 0.4 * np.sin(2 * np.pi * 2.3 * t))).astype("<i2").tobytes()


def _assert_faithful(decoded: np.ndarray, pcm: bytes, fmt: str, lag: int, min_snr_db: dict[str, float]) -> float:
    """`decoded` is the audio of `pcm` after `lag` samples of encoder delay: the same samples for a lossless format,
    at least `min_snr_db[fmt]` for a lossy one. Returns the SNR."""
    reference = np.frombuffer(pcm, dtype="<i2")
    found = fidelity(decoded, reference)
    assert found.lag == lag, f"{fmt}: the audio is {found.lag} samples late, not {lag} (encoder delay)"
    if fmt in LOSSLESS:
        assert np.array_equal(decoded[lag : lag + len(reference)], reference), f"{fmt}: samples differ"
        assert found.snr_db == math.inf
    else:
        assert found.snr_db >= min_snr_db[fmt], f"{fmt}: SNR {found.snr_db:.1f} dB < {min_snr_db[fmt]} dB"
    return found.snr_db


def _chunks(pcm: bytes, first: int = 20 * 1024 * 2) -> list[bytes]:
    """Chunks of the sizes the farm sends: a first one of `stream_chunk_size` tokens, then growing (doubling)."""
    out, at, size = [], 0, first
    while at < len(pcm):
        out.append(pcm[at : at + size])
        at, size = at + size, min(size * 2, 4 * first)
    return out


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def _encoder_children() -> list[str]:
    """ffmpeg processes whose parent is this process, zombies included ('Z' in their state)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == os.getpid() and name == "ffmpeg":
            found.append(f"{entry.name} {state}")
    return found


def _feeder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "audio-encoder-feeder"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_chunks_decode_to_every_sample_with_the_tail_intact(fmt: str) -> None:
    samples = 3 * RATE + 777  # not a whole number of any codec's frames
    pcm = _tones(samples)
    data = b"".join(encode(_chunks(pcm), fmt))
    decoded = assert_duration_matches(data, fmt, samples)
    _assert_faithful(decoded, pcm, fmt, PRIMING[fmt], TONES_SNR_DB)
    # The last 100 ms are there, at full level (a lost tail would decode as silence or be missing).
    tail = decoded[PRIMING[fmt] + samples - RATE // 10 : PRIMING[fmt] + samples]
    source_tail = np.frombuffer(pcm, dtype="<i2")[-(RATE // 10) :]
    assert _rms(tail) > 0.5 * _rms(source_tail), f"{fmt}: the last 100 ms are missing"
    assert not _encoder_children() and not _feeder_threads()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_complete_file_decodes_to_every_sample(fmt: str) -> None:
    samples = RATE + 333
    pcm = _tones(samples)
    decoded = assert_duration_matches(encode_file(pcm, fmt), fmt, samples)
    # A complete MP3's LAME header states its encoder delay, which the decoder drops: no delay is left.
    _assert_faithful(decoded, pcm, fmt, 0 if fmt == "mp3" else PRIMING[fmt], TONES_SNR_DB)


@pytest.mark.parametrize("samples", [RATE + 333, 5 * RATE])
def test_a_complete_flac_or_mp3_states_its_length_in_its_header_and_a_stream_none(samples: int) -> None:
    """Players read a complete file's duration from its header: FLAC's STREAMINFO total samples, MP3's Xing/Info
    frame count (with the LAME tag's encoder delay and padding, which make it gapless). A stream cannot know its
    length when its header leaves: it says 'unknown' (FLAC: 0) or has no such header (MP3), never a wrong one."""
    pcm = _tone(samples)
    assert flac_total_samples(encode_file(pcm, "flac")) == samples
    info = mp3_info(encode_file(pcm, "mp3"))
    assert info is not None and info.samples_per_frame == 576  # 24 kHz is MPEG-2 Layer III
    assert info.samples == samples and 0 < info.delay < 2 * info.samples_per_frame
    assert flac_total_samples(b"".join(encode(_chunks(pcm), "flac"))) == 0
    assert mp3_info(b"".join(encode(_chunks(pcm), "mp3"))) is None


def test_a_complete_wav_states_its_true_length_and_a_streamed_one_unknown() -> None:
    pcm = _tone(1000)
    complete = encode_file(pcm, "wav")
    assert int.from_bytes(complete[40:44], "little") == len(pcm) == len(complete) - 44
    streamed = b"".join(encode([pcm], "wav"))
    assert int.from_bytes(streamed[40:44], "little") == 0xFFFFFFFF - 36 and streamed[44:] == pcm


def test_one_encoder_sees_one_continuous_stream_no_click_at_chunk_ends() -> None:
    """A tone cut into chunks decodes like the same tone encoded in one piece: no discontinuity at the joins
    (one encoder per chunk would add priming silence, and a click, at each of them)."""
    pcm = _tone(2 * RATE)
    whole = decode(encode_file(pcm, "opus"), "opus").astype(np.float64)
    chunked = decode(b"".join(encode([pcm[i : i + 4800] for i in range(0, len(pcm), 4800)], "opus")), "opus")
    difference = chunked.astype(np.float64) - whole
    assert _rms(difference) < 0.05 * _rms(whole)


def test_encoded_bytes_leave_while_the_next_chunk_is_still_awaited() -> None:
    """The first chunk's audio comes out encoded while the source still waits for its second chunk (the farm sends
    it only once synthesized): the encoder does not hold packets back until more input or the end."""
    release, finished = threading.Event(), threading.Event()

    def source() -> Iterator[bytes]:
        yield _tone(RATE)
        release.wait(30)
        finished.set()
        yield _tone(RATE)

    for fmt in COMPRESSED:
        release.clear()
        finished.clear()
        stream = encode(source(), fmt)
        try:
            received = b""
            while len(received) < 2000:  # past any header: a quarter of a second of audio at the lowest bitrate
                received += next(stream)
            assert not finished.is_set(), f"{fmt}: nothing came out before the source's next chunk"
        finally:
            release.set()
            stream.close()
    assert not _encoder_children() and not _feeder_threads()


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_the_encoder_is_reaped_when_the_consumer_stops_early(fmt: str) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield _tone(RATE // 10)

    stream = encode(endless(), fmt)
    assert next(stream)
    assert _encoder_children() and _feeder_threads()
    stream.close()  # what the WSGI server does when the client leaves
    assert not _encoder_children(), "ffmpeg left running or as a zombie"
    assert not _feeder_threads(), "the feeder thread is still running"


def test_an_error_of_the_source_reaches_the_consumer_and_the_encoder_is_reaped() -> None:
    class SourceBroke(Exception):
        pass

    def broken() -> Iterator[bytes]:
        yield _tone(RATE)
        raise SourceBroke("synthesis failed")

    with pytest.raises(SourceBroke):
        b"".join(encode(broken(), "mp3"))
    assert not _encoder_children() and not _feeder_threads()


def test_an_unknown_format_is_refused_naming_the_allowed_ones(client: Any) -> None:
    body = {"text": "Hello.", "language": "en", "speaker_id": "x", "response_format": "ogg"}
    for path in ("/tts_stream", "/tts", "/jobs"):
        response = client.post(path, json=body)
        assert response.status_code == 400, response.get_data(as_text=True)
        error = response.get_json()["error"]
        assert error["code"] == "validation_error"
        assert all(f"'{fmt}'" in error["message"] for fmt in FORMATS), error["message"]
    response = client.get("/jobs/nope/audio?response_format=wma")
    assert response.status_code == 400 and "response_format" in response.get_json()["error"]["message"]


def test_the_openapi_document_declares_every_format(client: Any) -> None:
    spec = client.get("/openapi/openapi.json").get_json()
    for path, method in (("/tts_stream", "post"), ("/tts", "post"), ("/jobs/{job_id}/audio", "get")):
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        assert set(content) - {"application/json"} == {t.split(";")[0] for t in MEDIA_TYPES.values()}, path
    # The official XTTS server's shape gets /tts's audio base64-encoded in a JSON string.
    assert "application/json" in spec["paths"]["/tts"]["post"]["responses"]["200"]["content"]
    assert spec["components"]["schemas"]["TtsRequest"]["properties"]["response_format"]["enum"] == list(FORMATS)


# Against the running farm.


def _body(speaker: str, fmt: str, tokens: int = 40) -> dict[str, Any]:
    return tts_body("Formats for every player.", tokens, 10, speaker, response_format=fmt)


def _job_samples(farm: Farm, job_id: str) -> int:
    status = farm.wait_for_state(job_id, ("succeeded",))
    samples: int = status["progress"]["audio_samples"]
    assert samples > 0
    return samples


def _job_pcm(farm: Farm, job_id: str) -> bytes:
    """The job's audio as the farm synthesized it: its complete WAV, no encoder involved."""
    response = requests.get(farm.url(f"/jobs/{job_id}/audio"), params={"response_format": "wav"}, timeout=60)
    assert response.status_code == 200, response.text
    rate, frames, pcm = read_wav(response.content)
    assert rate == RATE and frames == _job_samples(farm, job_id)
    # Sound, not silence (the dev model's: a standard deviation of about 290): a reference of zeros proves nothing.
    assert np.frombuffer(pcm, dtype="<i2").std() > 30, "the job's audio is silent"
    return pcm


def _encoded_here(pcm: bytes, fmt: str) -> np.ndarray:
    """`pcm` encoded by this process's own ffmpeg, as the API encodes a complete file, and decoded: a reference that
    shares nothing with the API's path but the encoder's arguments."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"audio.{fmt}"
        subprocess.run(ffmpeg_file_command(fmt, path), input=pcm, capture_output=True, check=True, timeout=60)
        return decode(path.read_bytes(), fmt)


def _assert_job_audio(farm: Farm, job_id: str, data: bytes, fmt: str, *, complete: bool = False) -> None:
    """`data` decodes to the job's exact duration and to the job's audio: its very samples for a lossless format;
    for a lossy one, exactly what this machine's encoder makes of the job's PCM (ffmpeg's encoders are
    deterministic, streamed or complete alike: the farm fed its encoder the job's audio, whole and in order), which
    keeps at least FARM_SNR_DB of it. `complete`: a complete file, whose MP3 header states the encoder delay."""
    pcm = _job_pcm(farm, job_id)
    decoded = assert_duration_matches(data, fmt, len(pcm) // 2)
    lag = 0 if complete and fmt == "mp3" else PRIMING[fmt]
    snr = _assert_faithful(decoded, pcm, fmt, lag, FARM_SNR_DB)
    print(f"{fmt}: SNR {snr:.1f} dB against the job's audio")
    if fmt in LOSSLESS:
        return
    here = _encoded_here(pcm, fmt)
    here_lag = 0 if fmt == "mp3" else PRIMING[fmt]
    window = len(pcm) // 2
    assert np.array_equal(decoded[lag : lag + window], here[here_lag : here_lag + window]), (
        f"{fmt}: not what the encoder makes of the job's audio (SNR {snr:.1f} dB against it)"
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_tts_stream_in_every_format(farm: Farm, speaker: str, fmt: str) -> None:
    with requests.post(farm.url("/tts_stream"), json=_body(speaker, fmt), stream=True, timeout=120) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == MEDIA_TYPES[fmt]
        data = b"".join(response.iter_content(chunk_size=None))
        job_id = response.headers["X-Session-Id"]
    _assert_job_audio(farm, job_id, data, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tts_in_every_format(farm: Farm, speaker: str, fmt: str) -> None:
    response = requests.post(farm.url("/tts"), json=_body(speaker, fmt), timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == MEDIA_TYPES[fmt]
    _assert_job_audio(farm, response.headers["X-Session-Id"], response.content, fmt, complete=True)


def test_complete_flac_and_mp3_from_the_farm_state_the_jobs_length(farm: Farm, speaker: str) -> None:
    """/tts and GET /jobs/{id}/audio answer complete files: their headers hold the length of the audio the request
    asked for (a pinned token count), so players show the duration."""
    tokens = 40
    flac = requests.post(farm.url("/tts"), json=_body(speaker, "flac", tokens), timeout=120)
    assert flac.status_code == 200, flac.text
    assert flac_total_samples(flac.content) == xtts_samples(tokens)
    created = requests.post(farm.url("/jobs"), json=_body(speaker, "wav", tokens), timeout=30).json()
    assert _job_samples(farm, created["id"]) == xtts_samples(tokens)
    audio = farm.url(f"/jobs/{created['id']}/audio")
    flac = requests.get(audio, params={"response_format": "flac"}, timeout=60)
    assert flac.status_code == 200 and flac_total_samples(flac.content) == xtts_samples(tokens)
    mp3 = requests.get(audio, params={"response_format": "mp3"}, timeout=60)
    info = mp3_info(mp3.content)
    assert mp3.status_code == 200 and info is not None and info.samples == xtts_samples(tokens)


def test_job_audio_in_the_format_asked_for(farm: Farm, speaker: str) -> None:
    created = requests.post(farm.url("/jobs"), json=_body(speaker, "opus", tokens=60), timeout=30).json()
    assert created["audio_url"].endswith("?response_format=opus")
    farm.wait_for_state(created["id"], ("succeeded",))
    response = requests.get(farm.url(created["audio_url"]), timeout=60)
    assert response.status_code == 200 and response.headers["Content-Type"] == "audio/ogg"
    _assert_job_audio(farm, created["id"], response.content, "opus", complete=True)
    for fmt in ("mp3", "aac", "flac", "pcm"):
        response = requests.get(farm.url(f"/jobs/{created['id']}/audio"), params={"response_format": fmt}, timeout=60)
        assert response.status_code == 200 and response.headers["Content-Type"] == MEDIA_TYPES[fmt]
        _assert_job_audio(farm, created["id"], response.content, fmt, complete=True)
