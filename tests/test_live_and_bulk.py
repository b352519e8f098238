"""Two classes of work (shared/priority.py): live work goes first, in the broker and in a worker's batch, where a
bulk segment yields its slot to a live one and resumes exactly afterwards.

In process on the real dev checkpoint (the scheduler, no Celery): under the default sampling, a paused bulk segment
delivers the same tokens and audio as an uninterrupted run, and a live segment that finds the batch full of bulk
work is synthesized at once, not after it. Against a real worker: a live stream overtakes bulk work in the broker
and in the batch, and the bulk work then completes with all its audio; a worker killed while a bulk segment waits
paused loses none of it: another worker resumes it exactly."""

from __future__ import annotations

import functools
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import torch

from shared.params import SynthesisParams
from tests.audio import ResumingListener, xtts_samples
from tests.farms import SHORT_LEASES, SharedFarm
from tests.prometheus import scrape, value
from tools.localfarm import tts_body, wait_for
from workers.engine import XttsEngine
from workers.scheduler import LOW_WATER_SECONDS, BatchScheduler, Chunk, Handle, _Member
from workers.stream_decoder import StreamingDecoder, snr_db

TORCH_THREADS = 2
TEXT = "A bulk sentence that will be paused for a live listener, then go on."
LIVE_TEXT = "The live listener's sentence."
BULK_TOKENS, LIVE_TOKENS = 60, 24


def _params(tokens: int) -> SynthesisParams:
    """The default sampling (top_k 50, top_p 0.85, temperature 0.75), the length pinned (the dev model's noise)."""
    return SynthesisParams(min_new_tokens=tokens, max_new_tokens=tokens, stream_chunk_size=8)


def _segment(engine: XttsEngine, key: str, text: str, tokens: int, *, live: bool):  # type: ignore[no-untyped-def]
    voice = engine.builtin_voice("Claribel Dervla")
    assert voice is not None
    return engine.segment(key, text, "en", voice, _params(tokens), seed=1234, live=live)


def _available(handle: Handle) -> Iterator[Chunk]:
    while (event := handle.poll()) is not None:
        yield event


def _collect(scheduler: BatchScheduler, handles: dict[str, Handle], chunks: dict[str, list[Chunk]]) -> None:
    scheduler.step()
    for key, handle in handles.items():
        chunks[key].extend(_available(handle))


@functools.cache
def _solo(engine: XttsEngine) -> tuple[Chunk, ...]:
    """A bulk segment run alone, uninterrupted: what every bulk segment here (the same text, seed and length) must
    deliver however often it yields. Run once for the module: the engine gives it the same way every time."""
    scheduler = engine.new_scheduler(max_batch=1)
    handle = scheduler.submit(_segment(engine, "solo", TEXT, BULK_TOKENS, live=False))
    chunks: dict[str, list[Chunk]] = {"solo": []}
    while not handle.finished:
        _collect(scheduler, {"solo": handle}, chunks)
    return tuple(chunks["solo"])


def _tokens(chunks: list[Chunk]) -> list[int]:
    return [t for c in chunks for t in c.tokens]


def _audio(chunks: list[Chunk]) -> torch.Tensor:
    return torch.cat([c.audio for c in chunks])


def test_a_live_segment_takes_a_bulk_slot_and_the_bulk_one_resumes_exactly(engine: XttsEngine) -> None:
    alone = dict.fromkeys(("bulk-a", "bulk-b"), _solo(engine))
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 2  # it carries both slots at real time: only the full batch makes a bulk one yield
    handles = {key: scheduler.submit(_segment(engine, key, TEXT, BULK_TOKENS, live=False)) for key in alone}
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    for _ in range(15):  # both bulk segments are under way and fill the batch
        _collect(scheduler, handles, chunks)
    assert scheduler.active == 2 and all(chunks.values())

    handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, LIVE_TOKENS, live=True))
    chunks["live"] = []
    steps_to_first_audio = 0
    while not chunks["live"]:
        _collect(scheduler, handles, chunks)
        steps_to_first_audio += 1
    # It joined at once (a bulk segment yielded its slot), not after a bulk segment finished (45 more steps).
    assert scheduler.pauses == 1 and steps_to_first_audio <= 8 + 2
    assert scheduler.active == 2 and scheduler.paused == 1
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert scheduler.paused == 0 and scheduler.active == 0

    assert len(_tokens(chunks["live"])) == LIVE_TOKENS
    expected = math.floor(BULK_TOKENS * 4 * 24000 / 22050) * 256
    for key, solo in alone.items():
        # The same tokens as the uninterrupted run: the paused one replayed its tokens and sampled on from its own
        # generator; no token lost or repeated, the audio's length exact and the audio the same.
        assert _tokens(chunks[key]) == _tokens(solo), key
        assert len(_audio(chunks[key])) == len(_audio(solo)) == expected
        snr = snr_db(_audio(solo), _audio(chunks[key]))
        print(f"{key}: SNR {snr:.1f} dB against the uninterrupted run")
        assert snr > 100.0  # measured 120-140 dB: equal up to float rounding of the batched products


def test_with_live_work_the_batch_shrinks_to_its_live_capacity_and_grows_back(engine: XttsEngine) -> None:
    """Four bulk members fill the batch; it carries one stream at real time. A live segment arrives: every bulk
    member yields (a batch of more would play the live one slower than real time), and they all resume once it is
    done, each with its exact tokens."""
    keys = [f"bulk-{i}" for i in range(4)]
    alone = dict.fromkeys(keys[:2], _solo(engine))
    scheduler = engine.new_scheduler(max_batch=4)
    scheduler.capacity.pinned = 1
    handles = {key: scheduler.submit(_segment(engine, key, TEXT, BULK_TOKENS, live=False)) for key in keys}
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    for _ in range(15):
        _collect(scheduler, handles, chunks)
    assert scheduler.active == 4 and scheduler.paused == 0  # no live work: every slot is used

    handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, LIVE_TOKENS, live=True))
    chunks["live"] = []
    _collect(scheduler, handles, chunks)
    assert scheduler.active == 1 and scheduler.paused == 4 and scheduler.pauses == 4  # the live one, alone
    while not handles["live"].finished:
        _collect(scheduler, handles, chunks)
        assert scheduler.active <= 1 or handles["live"].finished
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert scheduler.paused == 0 and len(_tokens(chunks["live"])) == LIVE_TOKENS
    for key, solo in alone.items():  # the bulk ones that yielded lost and repeated nothing
        assert _tokens(chunks[key]) == _tokens(solo), key


def test_a_live_segment_arriving_during_bulk_decodes_waits_for_one_of_them_not_all(
    engine: XttsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU each member's audio is its own HiFi-GAN call (scheduler.decode_group). Four bulk members have chunks
    to decode in the same step; a live segment submitted during the first of those calls is admitted next: the other
    bulk decodes wait (their latents kept), and the next audio decoded is the live segment's first chunk."""
    scheduler = engine.new_scheduler(max_batch=4)
    scheduler.capacity.pinned = 1
    assert scheduler.decode_group == 1  # the CPU's setting, which these tests run on
    keys = [f"bulk-{i}" for i in range(4)]
    handles = {key: scheduler.submit(_segment(engine, key, TEXT, BULK_TOKENS, live=False)) for key in keys}
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    decoded: list[tuple[int, str]] = []  # (step, member) per HiFi-GAN call
    decode = scheduler._decode

    def watched(group: list[Any]) -> None:
        decoded.extend((scheduler.steps, member.key) for member in group)
        if "live" not in handles and scheduler.steps > 10:  # bulk chunks under way: the live one comes now
            handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, LIVE_TOKENS, live=True))
            chunks["live"] = []
            decoded.append((scheduler.steps, "live submitted"))
        decode(group)

    monkeypatch.setattr(scheduler, "_decode", watched)
    while "live" not in handles or not chunks["live"]:
        _collect(scheduler, handles, chunks)
    at = decoded.index(next(entry for entry in decoded if entry[1] == "live submitted"))
    # The bulk members go in step: each round of their chunks is decoded in one scheduler step, all four.
    *whole, cut = Counter(step for step, key in decoded[:at] if key.startswith("bulk")).values()
    assert whole and set(whole) == {4} and cut == 1, decoded[:at]  # the round the live one came in: cut short
    assert decoded[at + 1][1] == "live", decoded[at - 2 : at + 4]  # no other bulk decode before the live chunk
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    for key in keys:  # the bulk decodes that waited lost nothing
        assert len(_tokens(chunks[key])) == BULK_TOKENS
        assert sum(len(c.audio) for c in chunks[key]) == xtts_samples(BULK_TOKENS)


def test_a_live_segment_arriving_during_a_bulk_decode_stops_it_and_the_bulk_audio_is_unchanged(
    engine: XttsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk chunk's HiFi-GAN call takes up to a second on a CPU; a live segment submitted half way through it does
    not wait for the rest: the call stops at its next convolution, the next audio decoded is the live segment's first
    chunk, and the bulk chunk is decoded again later, its audio and tokens those of the uninterrupted run."""
    solo = _solo(engine)
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 1
    handles = {"bulk": scheduler.submit(_segment(engine, "bulk", TEXT, BULK_TOKENS, live=False))}
    chunks: dict[str, list[Chunk]] = {"bulk": []}
    decoded: list[list[str]] = []  # the members of each HiFi-GAN call, interrupted ones included
    decode = scheduler._decode

    def watched(group: list[Any]) -> None:
        decoded.append([member.key for member in group])
        decode(group)

    def live_comes(_module: Any, _inputs: Any) -> None:  # half of HiFi-GAN's residual blocks have run
        if "live" not in handles and chunks["bulk"]:
            handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, LIVE_TOKENS, live=True))
            chunks["live"] = []

    monkeypatch.setattr(scheduler, "_decode", watched)
    hook = engine.model.hifigan_decoder.waveform_decoder.resblocks[6].register_forward_pre_hook(live_comes)
    try:
        while "live" not in handles or not chunks["live"]:
            _collect(scheduler, handles, chunks)
    finally:
        hook.remove()
    assert scheduler.decodes_interrupted == 1
    assert decoded[-2:] == [["bulk"], ["live"]], decoded  # the call it stopped, then the live segment's first chunk
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert scheduler.decodes_interrupted == 1 and len(_tokens(chunks["live"])) == LIVE_TOKENS
    assert _tokens(chunks["bulk"]) == _tokens(list(solo))  # no token lost or repeated
    assert len(_audio(chunks["bulk"])) == len(_audio(list(solo)))
    snr = snr_db(_audio(list(solo)), _audio(chunks["bulk"]))
    print(f"bulk: SNR {snr:.1f} dB against the uninterrupted run")
    assert snr > 100.0  # measured 120-140 dB for a paused one: equal up to float rounding


def test_a_bulk_segment_with_only_decoding_left_does_not_keep_a_live_one_waiting(
    engine: XttsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch carries one stream (live capacity 1) and holds a bulk segment whose tokens are all made: only its last
    chunk is left to decode (it cannot be paused). A live segment arriving then starts at once, its first chunk the
    next audio decoded; the bulk chunk waits for it, not the other way round, and is delivered afterwards."""
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 1
    handles = {"bulk": scheduler.submit(_segment(engine, "bulk", TEXT, 16, live=False))}
    chunks: dict[str, list[Chunk]] = {"bulk": []}
    decoded: list[str] = []
    decode = scheduler._decode

    def watched(group: list[Any]) -> None:
        decoded.extend(member.key for member in group)
        if "live" not in handles and group[0].part_finished:  # the bulk segment's last chunk: the live one comes
            handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, LIVE_TOKENS, live=True))
            chunks["live"] = []
        decode(group)

    monkeypatch.setattr(scheduler, "_decode", watched)
    while "live" not in handles:
        _collect(scheduler, handles, chunks)
    assert scheduler.decodes_interrupted == 1  # that decode gave way at once
    _collect(scheduler, handles, chunks)
    assert scheduler.active == 2 and not handles["bulk"].finished  # the live one started; the bulk one waits
    while not chunks["live"]:
        _collect(scheduler, handles, chunks)
    # Its first chunk, its last (stopped), the live segment's first chunk; that last chunk again later.
    assert decoded == ["bulk", "bulk", "live"], decoded
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert sum(len(c.audio) for c in chunks["bulk"]) == xtts_samples(16)


def test_no_bulk_chunk_is_decoded_while_a_live_segment_makes_its_first(
    engine: XttsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that carries live and bulk work side by side (no pausing): while a live newcomer's first chunk is being
    generated, the bulk members' chunks that come due wait, however far behind their own clock they are (as a bulk
    segment that was paused a while is), so the first audio is not held up by bulk HiFi-GAN calls."""
    scheduler = engine.new_scheduler(max_batch=3)
    scheduler.capacity.pinned = 3
    bulk_params = SynthesisParams(min_new_tokens=40, max_new_tokens=40, stream_chunk_size=3)
    voice = engine.builtin_voice("Claribel Dervla")
    assert voice is not None
    handles = {
        key: scheduler.submit(engine.segment(key, TEXT, "en", voice, bulk_params, seed=i, live=False))
        for i, key in enumerate(("bulk-a", "bulk-b"))
    }
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    while not all(chunks.values()):
        _collect(scheduler, handles, chunks)
    for member in scheduler._members.values():  # as if they had waited paused for a minute: far behind their clock
        assert member.first_chunk_at is not None
        member.first_chunk_at -= 60.0
    decoded: list[str] = []
    decode = scheduler._decode

    def watched(group: list[Any]) -> None:
        decoded.extend(member.key for member in group)
        decode(group)

    monkeypatch.setattr(scheduler, "_decode", watched)
    handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, LIVE_TOKENS, live=True))
    chunks["live"] = []
    while not chunks["live"]:
        _collect(scheduler, handles, chunks)
    # The bulk chunks that came due meanwhile (of 6 tokens: one within those 8 steps) waited for the live one.
    assert decoded[: decoded.index("live") + 1] == ["live"], decoded
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert Counter(decoded)["bulk-a"] > 1 and len(_tokens(chunks["bulk-a"])) == 40  # and then went on, all of them


def test_a_bulk_chunk_is_decoded_only_while_every_live_listener_has_audio_in_hand(
    engine: XttsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch carries a live stream and a bulk segment side by side. A bulk chunk's HiFi-GAN call holds up the live
    stream's next chunk (one thread does both), so it runs only while the live listener has more than
    LOW_WATER_SECONDS of audio in hand beyond the making of that chunk; the bulk segment still gets all its audio,
    later."""
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 2
    handles = {"bulk": scheduler.submit(_segment(engine, "bulk", TEXT, BULK_TOKENS, live=False))}
    chunks: dict[str, list[Chunk]] = {"bulk": []}
    while not chunks["bulk"]:
        _collect(scheduler, handles, chunks)
    handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, 48, live=True))
    chunks["live"] = []
    in_hand: list[float] = []  # the live listener's audio in hand at each bulk decode while it plays
    decode = scheduler._decode

    def watched(group: list[Any]) -> None:
        live = scheduler._members.get("live")
        if live is not None and not any(member.segment.live for member in group):
            # What the listener has in hand beyond the making of the live segment's whole next chunk.
            own = scheduler.capacity.chunk_seconds(1, live.target) or 0.0
            in_hand.append(live.slack(time.monotonic()) - own)
        decode(group)

    monkeypatch.setattr(scheduler, "_decode", watched)
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert all(seconds > LOW_WATER_SECONDS for seconds in in_hand), in_hand
    assert [len(_tokens(chunks[key])) for key in ("bulk", "live")] == [BULK_TOKENS, 48]


@pytest.mark.parametrize("held", ["pending", "fed"])
def test_a_bulk_decode_waits_if_it_would_make_a_live_chunk_late(engine: XttsEngine, held: str) -> None:
    """The rule itself, on a batch set up by hand: a live member one step short of its next chunk, a bulk member with
    40 tokens' latents to decode, either not fed to its decoder yet or fed already (a decode of them was stopped). The
    bulk decode may go first only if the live listener's audio in hand covers it, the live chunk's whole making after
    it (its decode above all: the one step left is quick) and LOW_WATER_SECONDS."""
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.observe_step(1, 0.002)
    scheduler.capacity.observe_decode(1, 0.03)
    scheduler._decode_seconds_per_frame = 0.007
    live = _Member(Handle(_segment(engine, "live", LIVE_TEXT, 24, live=True)), arrived=time.monotonic())
    bulk = _Member(Handle(_segment(engine, "bulk", TEXT, BULK_TOKENS, live=False)), arrived=time.monotonic())
    width = live.segment.cond_latent.shape[-1]
    live.target, live.pending = 20, [torch.zeros(width)] * 19
    bulk.decoder = StreamingDecoder(engine.model.hifigan_decoder, bulk.segment.speaker_embedding)
    if held == "pending":
        bulk.pending = [torch.zeros(width)] * 40
    else:
        bulk.decoder.feed(torch.zeros(40, width))
    scheduler._members = {"live": live, "bulk": bulk}
    cost = 0.007 * (40 * 4 * 24000 / 22050 + 2 * scheduler.decode_context)  # about 1.4 s
    chunk = scheduler.capacity.chunk_seconds(1, 20)
    assert chunk is not None and chunk > 0.5
    live.first_chunk_at = time.monotonic()
    live.emitted_seconds = cost + LOW_WATER_SECONDS + chunk / 2  # enough if only its last step were counted
    assert not scheduler._live_can_wait([bulk])
    live.emitted_seconds = cost + LOW_WATER_SECONDS + chunk + 0.3
    assert scheduler._live_can_wait([bulk])


def test_a_live_chunk_is_decoded_before_a_bulk_one_that_came_first(
    engine: XttsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk segment and then a live one join a batch that carries both at real time: their first chunks are due in
    the same step, and the live one is decoded first (nobody plays the bulk audio as it comes), though the bulk one
    arrived first."""
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 2
    voice = engine.builtin_voice("Claribel Dervla")
    assert voice is not None
    # The bulk one starts a step earlier, with a first chunk one token longer: both first chunks are due together.
    bulk_params = SynthesisParams(min_new_tokens=16, max_new_tokens=16, stream_chunk_size=9)
    handles = {"bulk": scheduler.submit(engine.segment("bulk", TEXT, "en", voice, bulk_params, seed=1, live=False))}
    scheduler.step()
    handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, 16, live=True))
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    decoded: list[tuple[int, str]] = []
    decode = scheduler._decode

    def watched(group: list[Any]) -> None:
        decoded.extend((scheduler.steps, member.key) for member in group)
        decode(group)

    monkeypatch.setattr(scheduler, "_decode", watched)
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    # The first audio decoded is the live segment's, though the bulk one's first chunk was due first; the bulk one's
    # waits until the live listener has audio in hand.
    assert decoded[0][1] == "live" and "bulk" in [key for _, key in decoded], decoded


def test_between_the_segments_of_a_live_text_paused_bulk_work_stays_paused(engine: XttsEngine) -> None:
    """A live segment ends and the next of its text comes a moment later: the bulk members that yielded to the
    first stay paused for it (LIVE_HOLD_SECONDS), rather than each replaying its tokens to rejoin the batch only to be
    paused again; once no live work has come for that long, they resume."""
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 1
    handles = {key: scheduler.submit(_segment(engine, key, TEXT, BULK_TOKENS, live=False)) for key in ("a", "b")}
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    for _ in range(10):
        _collect(scheduler, handles, chunks)
    for sentence in ("first", "second"):
        handles[sentence] = scheduler.submit(_segment(engine, sentence, LIVE_TEXT, 16, live=True))
        chunks[sentence] = []
        while not handles[sentence].finished:
            _collect(scheduler, handles, chunks)
        _collect(scheduler, handles, chunks)  # the live one has left: the paused ones are held for the next
        assert scheduler.active == 0 and scheduler.paused == 2
    assert scheduler.pauses == 2  # paused once each, for both live segments
    wait_for(lambda: (_collect(scheduler, handles, chunks), scheduler.active == 2)[1], 30, "the bulk ones to resume")
    while not all(h.finished for h in handles.values()):
        _collect(scheduler, handles, chunks)
    assert scheduler.pauses == 2 and scheduler.paused == 0


def test_live_segments_queued_behind_a_full_batch_go_before_bulk_ones(engine: XttsEngine) -> None:
    scheduler = engine.new_scheduler(max_batch=1)
    handles = {"running": scheduler.submit(_segment(engine, "running", LIVE_TEXT, 16, live=True))}
    scheduler.step()
    handles["bulk"] = scheduler.submit(_segment(engine, "bulk", LIVE_TEXT, 16, live=False))
    handles["live"] = scheduler.submit(_segment(engine, "live", LIVE_TEXT, 16, live=True))
    chunks: dict[str, list[Chunk]] = {key: [] for key in handles}
    finished_order: list[str] = []
    while len(finished_order) < 3:
        _collect(scheduler, handles, chunks)
        finished_order += [k for k, h in handles.items() if h.finished and k not in finished_order]
    # A live segment never pauses another live one; the live one waiting goes before the bulk one that came first.
    assert finished_order == ["running", "live", "bulk"] and scheduler.pauses == 0


# --- against a real worker ---------------------------------------------------------------------------------------
# The bulk segments run long enough that the first is still running when the worker's registry entry (refreshed by
# its heartbeat, seconds behind) shows all four, and still when the live stream's first audio comes. 60 tokens were
# too few in a full run (the fifth job had started already).
BULK_JOB_TOKENS, LIVE_STREAM_TOKENS = 260, 30
SENTENCE = "A sentence of a long book, synthesized in bulk while nobody listens."


def _batch(farm: SharedFarm) -> dict[str, int]:
    batch: dict[str, int] = farm.live_workers()[0]["batch"]
    return batch


def test_a_live_stream_overtakes_bulk_work_that_fills_the_worker(farm_with) -> None:
    """One worker of 4 batch slots, 4 bulk jobs running in them and a fifth queued: a live stream gets its first
    audio while all of them are still running (a bulk segment paused for it; the live task went before the queued
    bulk one), and every bulk job then completes with exactly the audio it asked for."""
    farm: SharedFarm = farm_with(**SHORT_LEASES)
    assert _batch(farm)["max"] == 4
    bulk = []
    for _ in range(5):
        created = requests.post(farm.url("/jobs"), json=tts_body(SENTENCE, BULK_JOB_TOKENS, 20), timeout=30)
        assert created.status_code == 202 and created.json()["priority"] == "bulk", created.text
        bulk.append(created.json()["id"])
    wait_for(lambda: _batch(farm)["active"] == 4, 60, "the 4 batch slots full of bulk work")
    assert farm.job(bulk[4])["state"] == "queued"

    started = time.monotonic()
    with requests.post(
        farm.url("/tts_stream"),
        json=tts_body("Live words.", LIVE_STREAM_TOKENS, 8, response_format="pcm"),
        stream=True,
        timeout=60,
    ) as live:
        assert live.status_code == 200, live.text
        pieces = live.iter_content(chunk_size=None)
        first = next(pieces)
        first_audio = time.monotonic() - started
        states = [farm.job(job_id)["state"] for job_id in bulk]
        pcm = first + b"".join(pieces)
    print(f"live first audio {first_audio:.2f} s with 4 bulk segments in the batch; bulk jobs then: {states}")
    assert states == ["running"] * 4 + ["queued"], "the live stream waited for bulk work"
    assert len(pcm) // 2 == xtts_samples(LIVE_STREAM_TOKENS)
    assert wait_for(lambda: _batch(farm)["pauses"] >= 1, 30, "the worker to report the pause")
    during = scrape(farm.base_url, farm.headers)
    # One bulk segment paused for the live one, or more, down to the live capacity the worker measured.
    assert value(during, "xtts_batch_pauses_total") >= 1
    assert value(during, "xtts_segments_held", priority="bulk") == 4  # the fifth waits in the broker
    # The worker says its live capacity (pinned to its 4 slots on test farms: tools/localfarm.py) and the stream
    # speed it measured at each batch size as it ran.
    capacity = value(during, "xtts_live_capacity")
    health = requests.get(farm.url("/health"), timeout=10).json()
    assert 1 <= capacity <= 4 and 1 <= health["live_capacity"] <= 4  # (read apart: it may have moved between)
    assert value(during, "xtts_stream_speed", batch="4") > 0

    for job_id in bulk:
        assert farm.wait_for_state(job_id, ("succeeded", "failed"), 300)["state"] == "succeeded"
        audio = requests.get(farm.url(f"/jobs/{job_id}/audio"), params={"response_format": "pcm"}, timeout=30)
        assert len(audio.content) // 2 == xtts_samples(BULK_JOB_TOKENS), "a paused segment lost or repeated audio"
    after = scrape(farm.base_url, farm.headers)
    for priority, runs in (("live", 1), ("bulk", 5)):  # runs started, by class, with the time each waited
        assert value(after, "xtts_queue_wait_seconds_count", priority=priority) >= runs, priority


# Bulk segments long enough to still run (in a batch of 4, some 20 s) when the live stream pauses one and the worker
# is killed a few seconds after their first chunks.
PAUSED_BULK_TOKENS, HOLDING_LIVE_TOKENS = 80, 60


def _live_stream(farm: SharedFarm) -> tuple[str, bytes]:
    """POST /tts_stream read to its end: (its job id, its PCM)."""
    body = tts_body("Live words that keep a bulk segment paused.", HOLDING_LIVE_TOKENS, 8, response_format="pcm")
    with requests.post(farm.url("/tts_stream"), json=body, stream=True, timeout=240) as response:
        assert response.status_code == 200, response.text
        return response.headers["X-Session-Id"], b"".join(response.iter_content(chunk_size=None))


def test_a_worker_killed_while_a_bulk_segment_is_paused_has_it_resumed_elsewhere_exactly(farm_with) -> None:
    """Nothing lost: a worker whose batch of 4 is full of bulk work (each job with audio delivered already) pauses a
    bulk segment for a live stream and is killed (SIGKILL) while that segment waits paused. Another worker takes every
    segment over once the leases lapse: each bulk job's stream, read from its start, has every chunk once and in
    order (no gap where the paused segment stopped, no chunk of it delivered again) and all the audio the job
    reports and asked for; the live stream completes too."""
    farm: SharedFarm = farm_with(**SHORT_LEASES)
    assert _batch(farm)["max"] == 4
    bulk = []
    for _ in range(4):
        body = tts_body(SENTENCE, PAUSED_BULK_TOKENS, 8, priority="bulk")
        created = requests.post(farm.url("/jobs"), json=body, timeout=30)
        assert created.status_code == 202 and created.json()["priority"] == "bulk", created.text
        bulk.append(created.json()["id"])
    # Every bulk segment has published audio: whichever is paused has chunks the next run must not repeat.
    wait_for(lambda: all(farm.job(job_id)["progress"]["chunks"] >= 1 for job_id in bulk), 60, "audio of every bulk job")
    # The batch as the worker's registry entry says, which its heartbeat refreshes: seconds behind the jobs' progress.
    wait_for(lambda: _batch(farm)["active"] == 4, 30, "the worker to report its 4 bulk segments in the batch")

    with ThreadPoolExecutor(max_workers=1) as pool:
        live = pool.submit(_live_stream, farm)

        def paused_for_live() -> dict[str, Any] | None:
            if live.done():
                return {"live stream ended": True}  # too late: stop waiting
            workers = farm.live_workers()
            # One paused, or more: down to the live capacity the worker measured (scheduler.py's _limit).
            ok = len(workers) == 1 and workers[0]["batch"]["paused"] >= 1 and workers[0]["held"]["live"] == 1
            return workers[0] if ok else None

        victim = wait_for(paused_for_live, 30, "a bulk segment paused for the live stream")
        assert "live stream ended" not in victim, "the live stream ended before a bulk segment was seen paused"
        assert {c["job_id"] for c in victim["current"]} >= set(bulk)
        proc = next(p for p in farm.workers.values() if p.pid == victim["pid"])
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(10)
        states = {job_id: farm.job(job_id) for job_id in bulk}
        assert all(job["state"] == "running" for job in states.values()), states
        delivered = {job_id: job["progress"]["chunks"] for job_id, job in states.items()}
        farm.start_worker()

        def taken_over() -> bool:
            return all(farm.job(job_id)["segments"][0]["worker"] not in (None, victim["name"]) for job_id in bulk)

        wait_for(taken_over, 60, "another worker to take the dead worker's bulk segments over")
        print(
            f"bulk segments taken over {time.monotonic() - killed_at:.1f} s after the kill, chunks delivered before "
            f"it: {sorted(delivered.values())}"
        )
        live_job, live_pcm = live.result(timeout=240)

    for job_id in bulk:
        status = farm.wait_for_state(job_id, ("succeeded", "failed"), 240)
        assert status["state"] == "succeeded", status
        segment = status["segments"][0]
        assert segment["worker"] != victim["name"] and segment["attempts"] == 2, segment
        listener = ResumingListener(farm, job_id)  # the whole stream, from its first chunk
        listener.complete(PAUSED_BULK_TOKENS)  # ends; every chunk once, in order, seq 1, 2, ...; all the samples
        assert listener.cursors == [None]  # one connection: nothing pieced together by the reader
        assert len(listener.audio) > delivered[job_id]  # the chunks from before the kill, then the next run's
        samples = sum(len(event.pcm) for event in listener.audio) // 2
        assert samples == status["progress"]["audio_samples"] == xtts_samples(PAUSED_BULK_TOKENS), job_id
    assert farm.wait_for_state(live_job, ("succeeded", "failed"), 60)["state"] == "succeeded"
    assert len(live_pcm) // 2 == xtts_samples(HOLDING_LIVE_TOKENS)


def test_a_paused_segment_is_not_timed_out_for_the_time_it_yields(engine: XttsEngine) -> None:
    """SEGMENT_HARD_TIME_LIMIT is the wait for the model's next chunk (`Handle.events`' timeout), the soft limit the
    run's time: neither counts the time a bulk segment waits paused for live work (it could wait long under a
    sustained live load, and must then resume, not fail)."""
    import threading

    from workers.scheduler import Finished

    handle = Handle(_segment(engine, "bulk", TEXT, 8, live=False))
    with pytest.raises(TimeoutError):
        next(handle.events(timeout=0.05))  # running, and the model silent: a hung model
    handle.pause()
    got: list[Chunk] = []
    consumer = threading.Thread(target=lambda: got.extend(handle.events(timeout=0.05)))
    consumer.start()
    consumer.join(0.5)
    assert consumer.is_alive()  # still waiting, ten timeouts later: it is paused, not hung
    assert handle.paused_seconds >= 0.5
    handle.unpause()
    paused = handle.paused_seconds
    handle.put(Chunk(torch.zeros(10), (1,), 0, True))
    handle.put(Finished())
    consumer.join(5)
    assert not consumer.is_alive() and len(got) == 1 and handle.paused_seconds == paused
