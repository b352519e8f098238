"""Units of the voice agents' text and timing, no service needed: text written as it comes cut into pieces worth
speaking (shared/text_stream.py), and characters timed chunk by chunk while the audio streams
(shared/alignment.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.alignment import (
    ATTENTION,
    ESTIMATE,
    AttentionCursor,
    StreamingAligner,
    UtteranceAligner,
    proportional,
    segment_timing,
    token_char_ends,
)
from shared.text_stream import IncomingText

RATE = 24000


def _pieces(words: list[str], **options: object) -> tuple[list[str], str]:
    incoming = IncomingText(**options)  # type: ignore[arg-type]
    pieces = []
    for word in words:
        pieces += incoming.add(word)
    return pieces, incoming.pending


def test_a_sentence_is_complete_at_its_end_and_the_space_after_it() -> None:
    words = ["Hello", " there.", " How", " are", " you?", " I", " am"]
    pieces, pending = _pieces(words)
    assert pieces == ["Hello there. ", "How are you? "]
    assert pending == "I am"


def test_numbers_and_abbreviations_inside_a_sentence_do_not_end_it() -> None:
    pieces, pending = _pieces(["Pi is 3.14 and", " e.g., more"])
    assert pieces == [] and pending == "Pi is 3.14 and e.g., more"


def test_auto_mode_takes_a_sentence_end_that_ends_the_text_so_far() -> None:
    assert _pieces(["Whole sentences come."], eager=True)[0] == ["Whole sentences come."]
    assert _pieces(["Whole sentences come."])[0] == []


def test_a_long_text_without_a_sentence_end_is_cut_at_its_last_space() -> None:
    pieces, pending = _pieces(["one two three four five six"], long_after=15)
    assert pieces == ["one two three "] and pending == "four five six"


def test_a_flush_says_what_is_pending_but_never_blanks_alone() -> None:
    incoming = IncomingText()
    incoming.add("  ")
    assert incoming.flush() is None and incoming.pending == "  "
    incoming.add("and then")
    assert incoming.flush() == "  and then" and incoming.pending == ""


@given(st.lists(st.text(alphabet="ab .!?\n", max_size=12), max_size=30), st.integers(5, 40))
def test_every_character_written_is_in_exactly_one_piece_in_order(chunks: list[str], long_after: int) -> None:
    incoming = IncomingText(long_after=long_after)
    pieces = [piece for chunk in chunks for piece in incoming.add(chunk)]
    assert "".join(pieces) + incoming.pending == "".join(chunks)
    assert all(piece for piece in pieces)


def test_proportional_timing_spans_the_audio_exactly() -> None:
    timing = proportional("Hi, you.", 24000, RATE)
    assert timing.chars == list("Hi, you.") and timing.starts_ms[0] == 0
    assert timing.starts_ms[-1] + timing.durations_ms[-1] == 1000
    assert timing.durations_ms[0] > timing.durations_ms[2]  # a letter takes longer than a comma


# Two characters at least: a text of one is timed at its last chunk, from that chunk's start.
@given(
    st.text(min_size=2, max_size=60),
    st.lists(st.integers(0, 9000), min_size=1, max_size=12),
    st.integers(1, 100_000),
)
def test_streamed_timing_times_each_character_once_in_order_within_the_audio_and_ends_with_it(
    text: str, chunks: list[int], expected: int
) -> None:
    aligner = StreamingAligner(text, expected, RATE)
    timed, offset = [], 0
    for n, samples in enumerate(chunks):
        timing = aligner.chunk(samples, last=n == len(chunks) - 1)
        chunk_ms = samples * 1000 / RATE
        for ch, start, duration in zip(timing.chars, timing.starts_ms, timing.durations_ms, strict=True):
            assert start >= 0 and start + duration <= chunk_ms + 1  # within the audio sent with it
            timed.append((ch, offset + start, offset + start + duration))
        offset += chunk_ms
    assert "".join(ch for ch, _, _ in timed) == text
    starts = [start for _, start, _ in timed]
    # In order, up to the rounding of times within a chunk to whole milliseconds (a chunk of 65 samples lasts
    # 2.708 ms: a character at its end says 3 ms, the next chunk's first 2.708 ms).
    assert all(later >= earlier - 0.5 for earlier, later in itertools.pairwise(starts)) and starts[0] == 0
    assert abs(timed[-1][2] - offset) <= 1


def test_an_utterance_of_several_segments_is_exact_at_their_join() -> None:
    aligner = UtteranceAligner("One. Two!", ["one.", "two!"], [12000, 12000], RATE)
    first = aligner.chunk(0, 9000, last=True)
    assert first.said.chars == list("one.")
    assert first.said.starts_ms[-1] + first.said.durations_ms[-1] == 375
    second = aligner.chunk(1, 6000, last=True)
    assert second.said.starts_ms[0] == 0
    assert "".join(first.written.chars + second.written.chars) == "One. Two!"


@pytest.mark.parametrize("samples", [0, 1])
def test_a_last_chunk_of_no_audio_still_times_what_is_left(samples: int) -> None:
    aligner = StreamingAligner("abc", 24000, RATE)
    aligner.chunk(2400, last=False)
    rest = aligner.chunk(samples, last=True)
    assert rest.chars and all(d >= 0 for d in rest.durations_ms)


# --- timing from XTTS's attention ------------------------------------------------------------------------------------
def test_text_tokens_are_mapped_to_the_characters_they_say() -> None:
    """XTTS's tokenizer lower-cases and spells spaces `[SPACE]`, with its language tag first: each token's end lands
    on the written character it reaches; what the cleaners expanded ("Mr" said "mister") ends where its written form
    does."""
    pieces = ["[en]", "he", "llo", "[SPACE]", "wor", "ld", "."]
    assert token_char_ends(pieces, "Hello world.") == [0, 2, 5, 6, 9, 11, 12]
    assert token_char_ends(["[en]", "mis", "ter", "[SPACE]", "smith"], "Mr smith") == [0, 1, 2, 3, 8]  # "mister"
    assert token_char_ends(["xyz"], "Hello") is None  # nothing in common: no map
    # "İ" lower-cases to two characters: the map still counts the text's own characters.
    assert token_char_ends(["[en]", "i̇", "stanbul"], "İstanbul") == [0, 1, 8]
    assert token_char_ends(["[en]"], "Hello") is None


def test_a_cursor_that_moves_forward_through_the_text_marks_what_is_said_and_when() -> None:
    cursor = AttentionCursor([2, 5, 6, 9, 12])  # five text tokens: "he", "llo", " ", "wor", "ld."
    assert cursor.advance([0, 0, 1, 1]) is None  # on probation (4 audio tokens followed): steps held, timing estimated
    # 10 followed: the steps are let out. "he" is said when the part's third audio token (index 2) starts "llo".
    assert cursor.advance([1, 0, 2, 3, 3, 3]) == [(2, 2), (5, 6), (6, 7)]
    assert cursor.advance([3, 3]) == []  # still on "wor": nothing new said
    assert cursor.advance([4, 0, 9, None]) == [(9, 12)]  # on the last token: done, what follows no longer counts
    assert not cursor.lost


def test_a_few_foci_that_happen_to_move_forward_say_nothing() -> None:
    """Attention all over the text moves forward by chance for a token or two: lost before its probation ends, a
    cursor lets out none of the steps it made."""
    cursor = AttentionCursor([1, 2, 3, 4, 5, 6, 7])
    assert cursor.advance([0, 1, 2]) is None and not cursor.lost
    assert cursor.advance([3, 9]) is None and cursor.lost


@pytest.mark.parametrize(
    "focus",
    [
        [4],  # its first audio attends far into the text
        [0, 1, 5],  # a jump over text
        [0, 1, 2, 3, 0],  # back to the start: no alignment
        [0, None],  # a step without attention read
        [0] + [1] * 42,  # stuck on one token
    ],
)
def test_a_cursor_that_does_not_read_as_an_alignment_is_lost_for_the_rest_of_the_segment(
    focus: list[int | None],
) -> None:
    cursor = AttentionCursor([1, 2, 3, 4, 5, 6, 7])
    steps = cursor.advance(focus)
    assert steps is None or all(index < len(focus) - 1 for _, index in steps)  # what came before the loss, if any
    assert cursor.lost and cursor.advance([0]) is None
    assert AttentionCursor(None).advance([0]) is None  # no map: no cursor


def test_marks_time_characters_by_the_attention_and_the_segments_end_stays_exact() -> None:
    """Marks say "he" ends at 3000 samples and "llo" at 6000: those characters end there (not where the estimate
    puts them), the last chunk carries the rest up to its own end, and every character comes once, in order."""
    text = "hello world."
    aligner = UtteranceAligner(text, [text], [24000], RATE)
    first = aligner.chunk(0, 4000, last=False, marks=[(2, 3000)])
    assert first.source == ATTENTION and first.said.chars == list("he")
    assert first.said.starts_ms[-1] + first.said.durations_ms[-1] == 3000 * 1000 // RATE
    second = aligner.chunk(0, 4000, last=False, marks=[(5, 6000)])
    assert second.said.chars == list("llo")
    assert second.said.starts_ms[0] == 0  # where the chunk starts: "he" ended before it
    assert second.said.starts_ms[-1] + second.said.durations_ms[-1] == 2000 * 1000 // RATE  # at 6000 of the text
    last = aligner.chunk(0, 16000, last=True, marks=[])
    assert "".join(first.said.chars + second.said.chars + last.said.chars) == text
    assert last.said.starts_ms[-1] + last.said.durations_ms[-1] == round(16000 * 1000 / RATE)
    estimated = UtteranceAligner(text, [text], [24000], RATE).chunk(0, 4000, last=False)
    assert estimated.source == ESTIMATE
    assert estimated.said.starts_ms[-1] + estimated.said.durations_ms[-1] != 3000 * 1000 // RATE


@given(
    st.text(min_size=2, max_size=60),
    st.lists(st.tuples(st.integers(0, 9000), st.lists(st.integers(0, 70), max_size=4)), min_size=1, max_size=12),
)
def test_marked_timing_times_each_character_once_in_order_within_the_audio(
    text: str, chunks: list[tuple[int, list[int]]]
) -> None:
    """Whatever marks come (characters said, at samples anywhere, even past their chunk's audio), every character is
    timed once, in order, within the audio sent with it, and the last one ends with the text's audio."""
    aligner = StreamingAligner(text, 24000, RATE)
    timed, offset, at = [], 0.0, 0
    for n, (samples, reached) in enumerate(chunks):
        marks = [(chars, at + k * 500) for k, chars in enumerate(sorted(reached))]
        timing = aligner.chunk(samples, last=n == len(chunks) - 1, marks=marks)
        chunk_ms = samples * 1000 / RATE
        for ch, start, duration in zip(timing.chars, timing.starts_ms, timing.durations_ms, strict=True):
            assert start >= 0 and start + duration <= chunk_ms + 1
            timed.append((ch, offset + start, offset + start + duration))
        offset, at = offset + chunk_ms, at + samples
    assert "".join(ch for ch, _, _ in timed) == text
    starts = [start for _, start, _ in timed]
    assert all(later >= earlier - 0.5 for earlier, later in itertools.pairwise(starts))
    assert abs(timed[-1][2] - offset) <= 1


def test_a_segments_last_chunk_follows_its_marks_before_it_spreads_the_rest() -> None:
    text = "hello world."
    aligner = UtteranceAligner(text, [text], [24000], RATE)
    last = aligner.chunk(0, 12000, last=True, marks=[(6, 6000)])
    assert last.source == ATTENTION and "".join(last.said.chars) == text
    assert last.said.starts_ms[6] == 250  # "world." starts where the mark says "hello " ended
    assert last.said.starts_ms[-1] + last.said.durations_ms[-1] == 500
    assert UtteranceAligner(text, [text], [24000], RATE).chunk(0, 12000, last=True, marks=[]).source == ESTIMATE


def test_a_whole_segments_timing_follows_its_marks_and_its_last_character_still_takes_time() -> None:
    timing, source = segment_timing("ab cd", 24000, [(3, 12000), (5, 24000)], RATE)
    assert source == ATTENTION and timing.starts_ms[3] == 500
    assert timing.durations_ms[-1] > 0 and timing.starts_ms[-1] + timing.durations_ms[-1] == 1000
    assert segment_timing("ab cd", 24000, None, RATE) == (proportional("ab cd", 24000, RATE), ESTIMATE)
