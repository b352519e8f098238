"""The worker's lease book and the reaper's lock: their races, each provoked on purpose.

The lease book is a unit of its own (the SQL renewal it calls is given to it, and replaced here to interleave a
release with a renewal deterministically); the reaper's lock runs against a real Redis server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis

from tools.localfarm import RedisServer, wait_for
from workers.leases import LeaseBook
from workers.reaper import REAPER_LOCK, ReaperTurn


# --- the lease book ----------------------------------------------------------------------------------------------
def test_a_run_released_while_its_lease_is_renewed_is_not_marked_lost() -> None:
    """The run ends (its segment done, its lease cleared in SQL) between the renewal's read of the held runs and
    its update: SQL no longer knows its lease, and that must not mark it lost."""
    book: LeaseBook

    def renew_leases(runs: list[str], seconds: float) -> set[str]:
        assert runs == ["finishing", "running"]
        book.release("finishing")  # the run finishes while the UPDATE runs
        return {"running"}

    book = LeaseBook(renew_leases)
    book.hold("finishing")
    book.hold("running")
    book.renew(10.0)
    assert not book.lost("finishing")
    assert book.held() == ["running"]
    book.hold("finishing")  # (a run id is never reused; this only shows that nothing of it was left behind)
    assert book.held() == ["finishing", "running"]


def test_a_held_run_whose_lease_was_taken_over_is_lost_until_released() -> None:
    book = LeaseBook(lambda runs, seconds: {run for run in runs if run != "stalled"})
    for run in ("stalled", "alive"):
        book.hold(run)
    book.renew(10.0)
    assert book.lost("stalled") and not book.lost("alive")
    assert book.held() == ["alive"]  # a lost run's lease is not renewed again
    book.release("stalled")
    assert not book.lost("stalled")


# --- the reaper's lock -------------------------------------------------------------------------------------------
TURN = 1.0  # seconds: the lock's life without extension (REAPER_INTERVAL_SECONDS in the farm)


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/11")
    client.delete(REAPER_LOCK)
    yield client
    client.delete(REAPER_LOCK)


def _turn_is_taken_throughout(r: redis.Redis, seconds: float) -> None:
    """For `seconds`, another worker asks for the turn again and again and never gets it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with ReaperTurn(r, TURN, "other").taken() as other:
            assert not other, "a second reaper got the turn while the first one's pass was running"
        time.sleep(0.05)  # pace the attempts (nothing is waited for: the loop runs until its deadline)


def test_a_pass_longer_than_the_lock_keeps_the_turn_to_its_end_then_releases_it(r: redis.Redis) -> None:
    with ReaperTurn(r, TURN, "slow").taken() as ours:
        assert ours
        _turn_is_taken_throughout(r, 2.5 * TURN)  # the pass outlives the lock's own life
    assert r.get(REAPER_LOCK) is None, "a pass that took longer than its turn releases the lock when it ends"


def test_a_short_pass_keeps_the_turn_for_one_interval_from_its_start(r: redis.Redis) -> None:
    started = time.monotonic()
    with ReaperTurn(r, TURN, "quick").taken() as ours:
        assert ours
    left = r.pttl(REAPER_LOCK) / 1000
    assert 0 < left <= TURN - (time.monotonic() - started) + 0.05  # the farm runs one pass per interval
    with ReaperTurn(r, TURN, "other").taken() as other:
        assert not other


def test_the_lock_is_only_ever_extended_or_released_by_its_owner(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Its lock expired during a long pass and another reaper took the turn: the first one's keeper does not extend
    the second one's lock, and the first one's end leaves it alone."""
    caplog.set_level(logging.WARNING, logger="workers.reaper")
    with ReaperTurn(r, TURN, "first").taken() as ours:
        assert ours
        r.set(REAPER_LOCK, b"second:its-own-token", px=int(TURN * 1000))  # expired, and taken by another reaper
        wait_for(lambda: "expired during its pass" in caplog.text, 5 * TURN, "the keeper to find the lock gone")
    assert r.get(REAPER_LOCK) == b"second:its-own-token"
    assert 0 < r.pttl(REAPER_LOCK) <= TURN * 1000 - TURN * 1000 / 3 + 50  # not extended since it was taken
