"""Captions and timing on the farm's own API: GET /jobs/{id}/captions (WebVTT and SRT, read back with webvtt-py) and
the `timestamps` events of a job's Server-Sent Events stream."""

from __future__ import annotations

import io

import redis
import requests
import webvtt

from shared import jobs, streams
from shared.db import session_scope
from shared.settings import Settings, configure
from tests.audio import sse_events
from tools.localfarm import DEV_SPEAKER, Farm

SAMPLE_RATE = 24000
# Two sentences with a pause between: three segments, two of them said (a pause is silence, not a cue).
TEXT = "Captions begin here. [pause:0.2s] And they end with this."


def _stamp(cue: webvtt.Caption, which: str) -> int:
    hours, minutes, seconds = getattr(cue, which).replace(",", ".").split(":")
    return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)


def test_captions_cover_every_segment_once_in_order_at_its_exact_time(farm: Farm) -> None:
    response = requests.post(
        farm.url("/tts"),
        json={"text": TEXT, "language": "en", "speaker_id": DEV_SPEAKER, "response_format": "pcm"},
        timeout=300,
    )
    response.raise_for_status()
    job_id = response.headers["X-Session-Id"]
    segments = requests.get(farm.url(f"/jobs/{job_id}"), timeout=30).json()["segments"]
    assert [s["pause_ms"] for s in segments] == [0, 200, 0]
    duration_ms = len(response.content) / 2 / SAMPLE_RATE * 1000

    vtt = requests.get(farm.url(f"/jobs/{job_id}/captions"), timeout=30)
    assert vtt.status_code == 200 and vtt.headers["Content-Type"].startswith("text/vtt")
    cues = webvtt.from_string(vtt.text).captions
    srt = requests.get(farm.url(f"/jobs/{job_id}/captions"), params={"format": "srt"}, timeout=30)
    assert srt.headers["Content-Type"].startswith("application/x-subrip")
    srt_cues = webvtt.from_buffer(io.StringIO(srt.text), format="srt").captions
    assert [c.text for c in srt_cues] == [c.text for c in cues]
    said = [s for s in segments if not s["pause_ms"]]
    assert len(cues) == len(said)
    at, cue_of = 0, iter(cues)
    for segment in segments:
        if segment["pause_ms"]:
            at += segment["audio_samples"]
            continue
        cue = next(cue_of)
        assert len(cue.text) == segment["characters"]
        assert _stamp(cue, "start") == round(at * 1000 / SAMPLE_RATE)
        at += segment["audio_samples"]
        assert _stamp(cue, "end") == round(at * 1000 / SAMPLE_RATE)
    assert abs(_stamp(cues[-1], "end") - duration_ms) <= 1

    words = webvtt.from_string(
        requests.get(farm.url(f"/jobs/{job_id}/captions"), params={"granularity": "word"}, timeout=30).text
    ).captions
    assert [w.text for w in words] == " ".join(c.text for c in cues).split()
    starts = [_stamp(w, "start") for w in words]
    assert starts == sorted(starts) and all(_stamp(w, "end") <= duration_ms + 1 for w in words)


def test_the_job_stream_times_each_segment_after_its_audio(farm: Farm) -> None:
    created = requests.post(
        farm.url("/jobs"), json={"text": TEXT, "language": "en", "speaker_id": DEV_SPEAKER}, timeout=30
    ).json()
    with requests.get(farm.url(f"/jobs/{created['id']}/stream"), stream=True, timeout=300) as stream:
        events = list(sse_events(stream))
    names = [e.event for e in events]
    timestamps = [e.data for e in events if e.event == "timestamps"]
    segments = requests.get(farm.url(f"/jobs/{created['id']}"), timeout=30).json()["segments"]
    assert [t["segment"] for t in timestamps] == [s["index"] for s in segments if not s["pause_ms"]]
    at, timing_of = 0, iter(timestamps)
    for segment in segments:
        if segment["pause_ms"]:
            at += segment["audio_samples"]
            continue
        timing = next(timing_of)
        assert timing["start_ms"] == round(at * 1000 / SAMPLE_RATE)
        at += segment["audio_samples"]
        assert timing["end_ms"] == round(at * 1000 / SAMPLE_RATE)
        assert len(timing["chars"]) == segment["characters"] and timing["alignment_source"] == "estimate"
        assert timing["charStartTimesMs"][0] == 0
        last_end = timing["charStartTimesMs"][-1] + timing["charDurationsMs"][-1]
        assert abs(last_end - (timing["end_ms"] - timing["start_ms"])) <= 1
    # Each segment's timing comes right after its last audio chunk, before the next segment's audio.
    for k, name in enumerate(names):
        if name == "timestamps":
            assert names[k - 1] == "audio"
    assert names[-1] == "end"


def test_a_segment_timed_by_its_attention_is_captioned_and_stamped_by_its_marks(farm: Farm) -> None:
    """A worker whose model's attention reads as an alignment sends marks with its chunks (the random dev model's
    never does: a ghost run writes them here, as workers/synthesis.py would): the segment's `timestamps` event says
    `attention` and puts each word's end at its mark, and so do the word captions; the segment's joins stay exact."""
    text = "Marks time words."
    marks = [[(6, 12000)], [(11, 30000)]]  # "Marks " said by sample 12000, "time " by 30000
    chunks = [b"\x01\x00" * 24000, b"\x02\x00" * 24000]
    settings = Settings(DATABASE_URL=farm.database_url, REDIS_URL=farm.redis_url)
    configure(settings)
    try:
        r = redis.Redis.from_url(farm.redis_url)
        with session_scope() as s:
            job_id = jobs.create_job(
                s,
                origin="job",
                text=text,
                language="en",
                voice_kind="builtin",
                voice_ref=DEV_SPEAKER,
                params={},
                segments=[text],
                epoch=streams.current_epoch(r),
            ).id
        assert jobs.claim_next_segment(job_id, window=1, send_grace=3600) == 0
        assert isinstance(jobs.start_segment(job_id, 0, "ghost", "ghost-run", 60), jobs.SegmentWork)
        writer = streams.StreamWriter(r, job_id, 0, "ghost-run", 600)
        writer.claim()
        for seq, (pcm, chunk_marks) in enumerate(zip(chunks, marks, strict=True), start=1):
            writer.audio(seq, pcm, part_end=seq == 2, last=seq == 2, marks=chunk_marks)
            assert jobs.record_chunk(job_id, 0, "ghost-run", len(pcm) // 2)
        assert jobs.finish_segment(job_id, 0, "ghost-run") is True
        writer.end(3, [m for chunk_marks in marks for m in chunk_marks])
    finally:
        configure(None)

    with requests.get(farm.url(f"/jobs/{job_id}/stream"), stream=True, timeout=60) as stream:
        (timing,) = [e.data for e in sse_events(stream) if e.event == "timestamps"]
    assert timing["alignment_source"] == "attention" and "".join(timing["chars"]) == text
    ends = [start + length for start, length in zip(timing["charStartTimesMs"], timing["charDurationsMs"], strict=True)]
    assert ends[5] == 500 and ends[10] == 1250 and ends[-1] == 2000  # marks at 12000 and 30000; 48000 samples in all
    words = webvtt.from_string(
        requests.get(farm.url(f"/jobs/{job_id}/captions"), params={"granularity": "word"}, timeout=30).text
    ).captions
    assert [(w.text, _stamp(w, "start"), _stamp(w, "end")) for w in words] == [
        ("Marks", 0, ends[4]),
        ("time", 500, ends[9]),
        ("words.", 1250, 2000),
    ]
