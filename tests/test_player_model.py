"""The real-time listener of the `realtime` benchmark (benchmarks/player.py): known arrival schedules give known
first audio and stall seconds. No farm: arrival times are given, not measured."""

from __future__ import annotations

import pytest

from benchmarks.player import CONTINUITY_LIMIT_S, Playback, pcm_seconds, play


def test_audio_that_arrives_ahead_of_playback_never_stalls() -> None:
    # 1 s of audio every 0.5 s, from 0.3 s on: the buffer only grows.
    playback = play([(0.3 + 0.5 * i, 1.0) for i in range(6)])
    assert playback.first_audio_s == 0.3
    assert playback.stall_s == 0.0 and playback.stalls == 0
    assert playback.audio_s == 6.0 and playback.continuous


def test_a_piece_due_exactly_when_the_previous_one_runs_out_does_not_stall() -> None:
    assert play([(1.0, 0.5), (1.5, 0.5), (2.0, 0.5)]).stall_s == 0.0


def test_a_late_piece_stalls_for_exactly_its_lateness() -> None:
    # Playback starts at 1.0 and runs out at 2.0; the second piece comes at 2.75: 0.75 s of silence.
    playback = play([(1.0, 1.0), (2.75, 1.0)])
    assert playback.stall_s == pytest.approx(0.75) and playback.stalls == 1
    assert not playback.continuous


def test_the_playback_clock_pauses_while_stalled() -> None:
    # After the 2 s stall, playback of the second piece runs from 4.0 to 5.0: the third piece, at 4.9, is in time
    # (a clock that kept running would count it 2.9 s late).
    playback = play([(1.0, 1.0), (4.0, 1.0), (4.9, 1.0)])
    assert playback.stall_s == pytest.approx(2.0) and playback.stalls == 1


def test_stalls_add_up_over_a_stream_of_pieces_slower_than_real_time() -> None:
    # 0.2 s of audio every 0.3 s: each piece after the first comes 0.1 s after the audio ran out.
    playback = play([(0.5 + 0.3 * i, 0.2) for i in range(11)])
    assert playback.stall_s == pytest.approx(1.0) and playback.stalls == 10
    assert playback.first_audio_s == 0.5 and playback.audio_s == pytest.approx(2.2)


def test_a_stream_is_continuous_below_the_limit_only() -> None:
    assert play([(0.0, 1.0), (1.0 + CONTINUITY_LIMIT_S * 0.9, 1.0)]).continuous
    assert not play([(0.0, 1.0), (1.0 + CONTINUITY_LIMIT_S * 1.1, 1.0)]).continuous
    assert not Playback(first_audio_s=0.0, stall_s=CONTINUITY_LIMIT_S, stalls=1, audio_s=2.0).continuous


def test_empty_pieces_neither_start_playback_nor_stall() -> None:
    playback = play([(0.2, 0.0), (0.4, 1.0), (3.0, 0.0), (3.0, 1.0)])
    assert playback.first_audio_s == 0.4
    assert playback.stall_s == pytest.approx(1.6) and playback.stalls == 1


def test_a_stream_without_audio_has_no_first_audio_and_is_not_continuous() -> None:
    playback = play([])
    assert playback.first_audio_s is None and playback.audio_s == 0.0 and not playback.continuous


def test_pcm_bytes_are_seconds_of_16_bit_audio_at_24_khz() -> None:
    assert pcm_seconds(48000) == 1.0
