"""Deadlines, not arrival order (shared.jobs.playback_deadline, workers/scheduler.py): a live text's next segment is
due when its listener runs out of the text's earlier audio, and the worker's batch goes by those deadlines.

In SQL (both backends): the deadline a run reads with its segment is the job's playback clock: its first chunk plus
every earlier segment's audio (made, or estimated from its text). In process, on the real dev checkpoint: a next
segment whose listener still has audio in hand neither crowds a batch at its live capacity nor pauses bulk work,
and once it is due it starts, and its first chunk comes before its deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from shared import jobs
from shared.audio import SAMPLE_RATE, speech_seconds
from shared.db import session_scope
from shared.models import Job, utcnow
from shared.params import SynthesisParams
from shared.priority import Priority
from shared.settings import Settings, configure
from tools.localfarm import migrate, wait_for
from workers.engine import XttsEngine
from workers.scheduler import LOW_WATER_SECONDS, BatchScheduler, Handle

TORCH_THREADS = 2
TEXTS = ["The first sentence of the text.", "A second one, somewhat longer than the first.", "The third."]

pytestmark = pytest.mark.backends("sqlite", "postgresql")


@pytest.fixture(scope="module")
def database(backend: str, database_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = database_factory(backend)
    migrate(url)
    configure(Settings(DATABASE_URL=url))
    yield url
    configure(None)


def _job(priority: Priority) -> str:
    with session_scope() as s:
        job = jobs.create_job(
            s,
            origin="job",
            text=" ".join(TEXTS),
            language="en",
            voice_kind="builtin",
            voice_ref="x",
            params={},
            segments=TEXTS,
            epoch="e1",
            priority=priority,
        )
    return job.id


def _deadline(job_id: str, index: int) -> object:
    work = jobs.start_segment(job_id, index, "worker-a", f"run-{index}", 30)
    assert isinstance(work, jobs.SegmentWork), work
    return work.deadline


def test_a_live_segment_is_due_when_the_earlier_audio_of_its_text_runs_out(database: str) -> None:
    job_id = _job(Priority.LIVE)
    assert _deadline(job_id, 0) is None  # the first segment: as soon as possible
    assert jobs.record_chunk(job_id, 0, "run-0", 3 * SAMPLE_RATE)  # 3 s of audio, more than its text's estimate
    first_chunk_at = utcnow() - timedelta(seconds=2)
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(first_chunk_at=first_chunk_at))
    # Segment 0 is still running (3 s made so far) and segment 1 has made nothing: its estimate counts.
    expected = first_chunk_at + timedelta(seconds=3.0 + speech_seconds(len(TEXTS[1])))
    deadline = _deadline(job_id, 2)
    assert isinstance(deadline, type(expected))
    assert abs((deadline - expected).total_seconds()) < 0.01, (deadline, expected)


def test_before_the_first_audio_the_clock_starts_now_and_bulk_work_has_no_deadline(database: str) -> None:
    live = _job(Priority.LIVE)
    before = utcnow()
    deadline = _deadline(live, 1)
    assert isinstance(deadline, type(before))
    estimate = speech_seconds(len(TEXTS[0]))
    assert before + timedelta(seconds=estimate) <= deadline <= utcnow() + timedelta(seconds=estimate)
    assert _deadline(_job(Priority.BULK), 1) is None


def _params(tokens: int) -> SynthesisParams:
    return SynthesisParams(min_new_tokens=tokens, max_new_tokens=tokens, stream_chunk_size=8)


def _submit(
    engine: XttsEngine, scheduler: BatchScheduler, key: str, tokens: int, *, live: bool, deadline: float | None = None
) -> Handle:
    voice = engine.builtin_voice("Claribel Dervla")
    assert voice is not None
    segment = engine.segment(key, TEXTS[0], "en", voice, _params(tokens), seed=7, live=live, deadline=deadline)
    return scheduler.submit(segment)


def _drain(handles: list[Handle]) -> None:
    for handle in handles:
        while handle.poll() is not None:
            pass


def test_a_next_segment_with_audio_in_hand_waits_for_room_instead_of_crowding_the_batch(engine: XttsEngine) -> None:
    """The batch carries one stream at real time (live capacity 1). A text's next segment whose listener has a long
    while of audio left waits; a new text's first segment (no deadline) would have joined at once."""
    scheduler = engine.new_scheduler(max_batch=4)
    scheduler.capacity.pinned = 1
    playing = _submit(engine, scheduler, "playing", 24, live=True)
    scheduler.step()
    following = _submit(engine, scheduler, "next", 16, live=True, deadline=time.monotonic() + 600)
    while not playing.finished:
        scheduler.step()
        _drain([playing, following])
        assert scheduler.active <= 1 or playing.finished  # never two live streams past the capacity of one
    wait_for(lambda: (scheduler.step(), _drain([following]), following.finished)[2], 60, "the next segment to run")
    assert following.paused_seconds > 0  # its wait was by design: no time limit counted it

    newcomer_scheduler = engine.new_scheduler(max_batch=4)
    newcomer_scheduler.capacity.pinned = 1
    _submit(engine, newcomer_scheduler, "playing", 24, live=True)
    newcomer_scheduler.step()
    _submit(engine, newcomer_scheduler, "newcomer", 16, live=True)
    newcomer_scheduler.step()
    assert newcomer_scheduler.active == 2  # a listener with nothing in hand is never kept waiting


def test_a_next_segment_pauses_bulk_work_only_when_due_and_still_meets_its_deadline(engine: XttsEngine) -> None:
    """Bulk work fills the batch. A live text's next segment, due in a few seconds, leaves the bulk members running
    until it must start; then they yield to it, and its first chunk comes before its listener runs out of audio."""
    scheduler = engine.new_scheduler(max_batch=2)
    scheduler.capacity.pinned = 1
    bulk = [_submit(engine, scheduler, f"bulk-{i}", 200, live=False) for i in range(2)]
    for _ in range(4):  # the step and decode times are measured
        scheduler.step()
        _drain(bulk)
    needed = scheduler.capacity.first_chunk_seconds(3, 8)  # what the scheduler reckons: a batch of one more
    assert needed is not None
    lead = needed + LOW_WATER_SECONDS
    deadline = time.monotonic() + lead + 3.0
    following = _submit(engine, scheduler, "next", 16, live=True, deadline=deadline)
    scheduler.step()
    _drain(bulk)
    assert scheduler.pauses == 0 and scheduler.active == 2  # not due: the bulk members go on
    wait_for(lambda: (scheduler.step(), _drain(bulk), scheduler.pauses)[2] == 2, 30, "the bulk members to yield")
    paused_at = time.monotonic()
    assert paused_at >= deadline - lead - 1.0  # not long before it was due (one step of slack)
    first = None
    while first is None:
        scheduler.step()
        _drain(bulk)
        first = following.poll()
    assert time.monotonic() < deadline, f"first chunk {time.monotonic() - deadline:.2f} s after its deadline"
