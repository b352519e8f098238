"""Answers shared by an API process's listeners: what many of them would each ask SQL or Redis at the same moment
(a job's state when their reads time out together, a finished segment's timing, a job's final state), asked by one
of them for all and kept a short while. A failed question is shared too: listeners do not queue, one after another,
behind a database that does not answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class SharedAnswers:
    """`answer(key, ask)`: `ask()`'s answer (or error) for `key`, asked at most once per `max_age()` seconds by one
    caller while the others wait for it; at most `limit` answers are kept (past it, the stale ones are forgotten)."""

    def __init__(self, max_age: Callable[[], float], limit: int = 10_000) -> None:
        self._max_age, self._limit = max_age, limit
        self._answers: dict[Hashable, tuple[float, Any, Exception | None]] = {}
        self._asking: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def answer(self, key: Hashable, ask: Callable[[], Any]) -> Any:
        if (fresh := self._fresh(key)) is None:
            with self._lock:
                asking = self._asking.setdefault(key, threading.Lock())
            with asking:
                if (fresh := self._fresh(key)) is None:  # else another caller asked while this one waited
                    try:
                        fresh = (ask(), None)
                    except Exception as exc:
                        fresh = (None, exc)
                    with self._lock:
                        self._answers[key] = (time.monotonic(), *fresh)
            self._forget_stale()
        answer, error = fresh
        if error is not None:
            raise error
        return answer

    def _fresh(self, key: Hashable) -> tuple[Any, Exception | None] | None:
        with self._lock:
            seen = self._answers.get(key)
        if seen is None or time.monotonic() - seen[0] >= self._max_age():
            return None
        return seen[1], seen[2]

    def _forget_stale(self) -> None:
        now, age = time.monotonic(), self._max_age()
        with self._lock:
            if len(self._answers) <= self._limit:
                return
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < age}
            if len(self._answers) > self._limit:  # all fresh: the oldest half goes
                kept = sorted(self._answers.items(), key=lambda item: item[1][0])[len(self._answers) // 2 :]
                self._answers = dict(kept)
            self._asking = {k: v for k, v in self._asking.items() if k in self._answers or v.locked()}
