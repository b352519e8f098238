"""A worker's real-time capacity (workers/capacity.py), from step and decode times: each of b streams gets one
token's audio (1024 / 22050 s) per `step(b) + b * decode_per_token` seconds."""

from __future__ import annotations

import pytest

from workers.capacity import AUDIO_SECONDS_PER_TOKEN, Capacity


def test_capacity_is_the_largest_batch_whose_streams_outrun_playback_with_a_margin() -> None:
    capacity = Capacity(max_batch=4)
    assert capacity.live_capacity() is None and capacity.stream_speed(1) is None  # nothing measured yet
    for _ in range(3):
        capacity.observe_step(1, 0.010)
        capacity.observe_step(4, 0.025)
    capacity.observe_decode(tokens=10, seconds=0.05)  # 5 ms per token
    assert capacity.step_seconds(2) == pytest.approx(0.015)  # between the sizes measured
    speeds = {b: capacity.stream_speed(b) for b in range(1, 5)}
    expected = {1: 0.015, 2: 0.025, 3: 0.035, 4: 0.045}
    for b, cycle in expected.items():
        assert speeds[b] == pytest.approx(AUDIO_SECONDS_PER_TOKEN / cycle)
    assert capacity.live_capacity(margin=1.25) == 3  # 1.33x at 3 streams, 1.03x at 4
    assert capacity.live_capacity(margin=1.0) == 4


def test_a_slow_machine_still_takes_one_stream_and_new_measurements_move_the_means() -> None:
    capacity = Capacity(max_batch=8)
    capacity.observe_step(1, 0.2)  # far slower than real time
    assert capacity.live_capacity() == 1
    assert capacity.step_seconds(4) == pytest.approx(0.8)  # one size seen: cost in proportion to the rows
    for _ in range(100):
        capacity.observe_step(1, 0.01)  # the load went away
    assert capacity.step_seconds(1) == pytest.approx(0.01, rel=1e-3)
    assert capacity.live_capacity() == 3  # 0.0464 / (0.01 b) >= 1.25 up to b = 3


def test_a_pinned_capacity_is_reported_whatever_is_measured_within_the_batch() -> None:
    capacity = Capacity(max_batch=4, pinned=2)
    assert capacity.live_capacity() == 2  # before any measurement too
    capacity.observe_step(1, 0.2)  # a machine that measures 1
    assert capacity.live_capacity() == 2
    assert Capacity(max_batch=4, pinned=16).live_capacity() == 4  # never more streams than batch slots
