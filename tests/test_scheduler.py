"""The worker's continuous-batching scheduler, in process on the real dev checkpoint (no Celery, no Redis):
a segment in a batch sounds as it does alone, joins and cancels leave the others untouched, and a resumed
segment continues its utterance exactly."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import pytest
import torch

from shared.audio import SAMPLE_RATE, TOKEN_SECONDS
from shared.params import SynthesisParams
from shared.streams import Delivered
from tests.audio import xtts_samples
from tools.localfarm import DEV_SPEAKER
from workers.engine import XttsEngine
from workers.scheduler import BatchScheduler, Cancelled, Chunk, Handle
from workers.stream_decoder import snr_db

TEXTS = (
    "The first sentence of the batch.",
    "A second one, somewhat longer than the first, with a clause.",
    "Short third.",
    "And the fourth sentence closes the batch of four.",
)
TOKENS = (36, 50, 24, 44)


TORCH_THREADS = 2  # the session's engine (conftest.py) on both cores


# Batched and alone, a segment's audio differs by float rounding only: measured 135.3 to 135.8 dB SNR under the
# default sampling (the same tokens: each segment draws from its own seeded generator); asserted 15 dB below.
ROUNDING_SNR_DB = 120.0


def _params(tokens: int, greedy: bool = False) -> SynthesisParams:
    """The default sampling with the length pinned; `greedy`: top_k=1 (coqui always samples, one candidate makes it
    deterministic whatever the seed)."""
    changes = {"top_k": 1} if greedy else {}
    return SynthesisParams(min_new_tokens=tokens, max_new_tokens=tokens, stream_chunk_size=8, **changes)


def _drive(scheduler: BatchScheduler, handles: list[Handle], cancel: dict[int, int] | None = None) -> list[list[Chunk]]:
    """Step the scheduler until every handle has finished; `cancel[i] = n` cancels handle i after n chunks."""
    chunks: list[list[Chunk]] = [[] for _ in handles]
    done = [False] * len(handles)
    while not all(done):
        scheduler.step()
        for i, handle in enumerate(handles):
            if done[i]:
                continue
            try:
                for chunk in _available(handle):
                    chunks[i].append(chunk)
                    if cancel and cancel.get(i) == len(chunks[i]):
                        handle.cancel()
            except Cancelled:
                assert cancel and i in cancel, "only a cancelled segment may end this way"
            done[i] = handle.finished
    return chunks


def _available(handle: Handle) -> Iterator[Chunk]:
    while (event := handle.poll()) is not None:
        yield event


@functools.cache  # the engine gives the same segment the same way every time: each reference is run once
def _solo(engine: XttsEngine, text: str, tokens: int, greedy: bool = False, seed: int = 7) -> list[Chunk]:
    scheduler = engine.new_scheduler(max_batch=1)
    handle = scheduler.submit(engine.segment("solo", text, "en", _voice(engine), _params(tokens, greedy), seed=seed))
    return _drive(scheduler, [handle])[0]


def _voice(engine: XttsEngine):  # type: ignore[no-untyped-def]
    voice = engine.builtin_voice(DEV_SPEAKER)
    assert voice is not None
    return voice


def _audio(chunks: list[Chunk]) -> torch.Tensor:
    return torch.cat([c.audio for c in chunks])


def _tokens(chunks: list[Chunk]) -> list[int]:
    return [t for c in chunks for t in c.tokens]


@pytest.mark.parametrize("decode_group", [1, 4], ids=["spans one by one (a CPU)", "spans batched (a GPU)"])
def test_a_segment_in_a_batch_of_four_sounds_as_it_does_alone(engine: XttsEngine, decode_group: int) -> None:
    alone = [_solo(engine, text, n) for text, n in zip(TEXTS, TOKENS, strict=True)]
    scheduler = engine.new_scheduler(max_batch=4)
    scheduler.decode_group = decode_group
    handles = [
        scheduler.submit(engine.segment(i, text, "en", _voice(engine), _params(n), seed=7))
        for i, (text, n) in enumerate(zip(TEXTS, TOKENS, strict=True))
    ]
    batched = _drive(scheduler, handles)
    for solo, together, n in zip(alone, batched, TOKENS, strict=True):
        assert _tokens(together) == _tokens(solo) and len(_tokens(solo)) == n
        a, b = _audio(solo), _audio(together)
        assert len(a) == len(b) == xtts_samples(n)
        snr = snr_db(a, b)
        print(f"batched vs alone, {n} tokens: SNR {snr:.1f} dB, max |diff| {float((a - b).abs().max()):.2e}")
        assert snr > ROUNDING_SNR_DB  # equal up to float rounding of the batched matrix products


def test_late_joiners_and_a_cancel_leave_the_others_untouched(engine: XttsEngine) -> None:
    alone = [_solo(engine, text, n) for text, n in zip(TEXTS[:2], TOKENS[:2], strict=True)]
    scheduler = engine.new_scheduler(max_batch=4)
    first = scheduler.submit(engine.segment(0, TEXTS[0], "en", _voice(engine), _params(TOKENS[0]), seed=7))
    for _ in range(5):
        scheduler.step()  # the first stream is under way when the others join
    second = scheduler.submit(engine.segment(1, TEXTS[1], "en", _voice(engine), _params(TOKENS[1]), seed=7))
    doomed = scheduler.submit(engine.segment(2, TEXTS[3], "en", _voice(engine), _params(200), seed=7))
    chunks = _drive(scheduler, [first, second, doomed], cancel={2: 2})
    assert _tokens(chunks[0]) == _tokens(alone[0]) and _tokens(chunks[1]) == _tokens(alone[1])
    snrs = [snr_db(_audio(alone[i]), _audio(chunks[i])) for i in (0, 1)]
    print(f"late joiners and a cancel: SNR {snrs[0]:.1f} and {snrs[1]:.1f} dB against alone")
    assert min(snrs) > ROUNDING_SNR_DB
    assert len(chunks[2]) == 2 and len(_tokens(chunks[2])) < 200  # stopped at the next step after the cancel
    assert scheduler.active == 0


def test_a_resumed_segment_continues_its_utterance_exactly(engine: XttsEngine) -> None:
    """A run that delivered k chunks and died: the next run replays their audio tokens and publishes the
    rest, which joins the delivered audio with no gap and no duplicate."""
    full = _solo(engine, TEXTS[1], 70, greedy=True)
    for delivered in (1, 3):
        done = full[:delivered]
        so_far = Delivered(last_seq=delivered, tokens={0: _tokens(done)})
        scheduler = engine.new_scheduler(max_batch=2)
        resumed = scheduler.submit(
            engine.segment("again", TEXTS[1], "en", _voice(engine), _params(70, greedy=True), seed=99, resume=so_far)
        )
        rest = _drive(scheduler, [resumed])[0]
        assert _tokens(done) + _tokens(rest) == _tokens(full)  # top_k=1: the same utterance, whatever the seed
        joined = torch.cat([_audio(done), _audio(rest)])
        assert len(joined) == len(_audio(full)) == xtts_samples(70)
        snr = snr_db(_audio(full), joined)
        print(f"resumed after {delivered} chunks: SNR {snr:.1f} dB against the uninterrupted run")
        assert snr > ROUNDING_SNR_DB  # measured 136.1 and 141.9 dB


def test_a_resumed_segment_under_default_sampling_goes_on_from_the_delivered_audio(engine: XttsEngine) -> None:
    """As the farm resumes a segment: same seed (jobs.segment_seed), default sampling. The new run replays the
    delivered tokens and re-seeds its generator, so what it draws next is not what the first run drew; but it goes on
    exactly where the delivered audio stopped: the tokens and samples add up to the segment's, and its first audio
    (decoded from the step after the replayed tokens, the same latent as the first run's) is the first run's."""
    full = _solo(engine, TEXTS[1], 70, seed=99)
    for delivered in (1, 3):
        done = full[:delivered]
        so_far = Delivered(last_seq=delivered, tokens={0: _tokens(done)})
        scheduler = engine.new_scheduler(max_batch=2)
        resumed = scheduler.submit(
            engine.segment("again", TEXTS[1], "en", _voice(engine), _params(70), seed=99, resume=so_far)
        )
        rest = _drive(scheduler, [resumed])[0]
        at = len(_tokens(done))
        assert len(_tokens(rest)) == 70 - at
        assert _tokens(rest) != _tokens(full)[at:]  # measured: none of the 62, 14 new tokens equal
        joined = torch.cat([_audio(done), _audio(rest)])
        assert len(joined) == len(_audio(full)) == xtts_samples(70)
        start = len(_audio(done))
        snr = snr_db(_audio(full)[start : start + 256], _audio(rest)[:256])
        print(f"resumed after {delivered} chunks, re-seeded: first 256 samples at {snr:.1f} dB of the first run's")
        assert snr > ROUNDING_SNR_DB  # measured 135.8 dB


def test_finished_parts_are_skipped_when_resuming(engine: XttsEngine) -> None:
    so_far = Delivered(last_seq=3, tokens={0: [5] * 10}, parts_ended=frozenset({0}))
    segment = engine.segment("done", "Short.", "en", _voice(engine), _params(10), seed=1, resume=so_far)
    scheduler = engine.new_scheduler(max_batch=1)
    assert _drive(scheduler, [scheduler.submit(segment)])[0] == []  # its only part was delivered already


# --- the attention's marks ---------------------------------------------------------------------------------------
def test_a_segments_text_tokens_map_onto_its_text_across_its_parts(engine: XttsEngine) -> None:
    """A text too long for one GPT pass is split in parts: each part's tokens map onto the characters of the whole
    segment's text, the parts one after the other, the last ending with the text."""
    text = " ".join(["Words that make a long segment, one of several parts."] * 9)
    segment = engine.segment("k", text, "en", engine.builtin_voice(DEV_SPEAKER), SynthesisParams(), 0)  # type: ignore[arg-type]
    assert len(segment.parts) > 1
    ends = [part.char_ends for part in segment.parts]
    assert all(e is not None and list(e) == sorted(e) for e in ends)
    assert ends[-1] is not None and ends[-1][-1] == len(text)
    for before, after in itertools.pairwise(ends):  # a part ends where the space before the next one is
        assert before is not None and after is not None and text[before[-1]] == " " and before[-1] + 1 == after[0]


def test_a_chunks_marks_come_from_its_tokens_foci_at_their_place_in_the_segments_audio(engine: XttsEngine) -> None:
    from workers.synthesis import AttentionTiming

    voice = engine.builtin_voice(DEV_SPEAKER)
    segment = engine.segment("k", "Hi there.", "en", voice, SynthesisParams(), 0)  # type: ignore[arg-type]
    char_ends = segment.parts[0].char_ends
    assert char_ends is not None and char_ends[-1] == len("Hi there.")
    per_token = TOKEN_SECONDS * SAMPLE_RATE  # 1114.6 samples of audio per audio token
    timing = AttentionTiming(segment, Delivered(2, 48000, marks=((0, 100),)))  # 2 s delivered by an earlier run

    def chunk(foci: list[int | None], part_end: bool = False) -> Chunk:
        return Chunk(torch.zeros(0), tuple(range(len(foci))), 0, part_end, tuple(foci))

    # Tokens "[en]", "h", "i", "[SPACE]", ...: the language tag says nothing; the third audio token reaches "i", so
    # "h" is said by then: where that token's audio starts, 2 tokens into the part. A chunk's audio lags its tokens
    # (the decoder keeps its last ones for the next): a mark past the audio sent waits for the chunk that has it.
    assert char_ends[:3] == (0, 1, 2)
    assert timing.marks(chunk([0, 1, 2, 2, 2, 2, 2, 2, 2, 2]), 4000) == [(1, 48000 + round(2 * per_token))]
    assert timing.marks(chunk([2, 2, 2, 3]), 200) == []  # "i" said at token 13 (62 489): later than this audio
    assert timing.marks(chunk([3], part_end=True), 6000) == [(2, 58200)]  # at the end of the part's audio at most
    assert timing.made == [(0, 100), (1, 50229), (2, 58200)]  # what the stream's end entry carries
    lost = AttentionTiming(segment, Delivered())
    assert lost.marks(chunk([0, 9]), 2000) is None and lost.marks(chunk([0]), 1000) is None
    resumed = engine.segment("k", "Hi there.", "en", voice, SynthesisParams(), 0, Delivered(1, 100, {0: [5, 6]}))  # type: ignore[arg-type]
    assert AttentionTiming(resumed, Delivered(1, 100)).marks(chunk([0]), 1000) is None  # mid-text: no cursor
