"""Units of the voice agents' text and timing, no service needed: text written as it comes cut into pieces worth
speaking (shared/text_stream.py), and characters timed chunk by chunk while the audio streams
(shared/alignment.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.alignment import StreamingAligner, UtteranceAligner, proportional
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
    assert starts == sorted(starts) and starts[0] == 0
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
