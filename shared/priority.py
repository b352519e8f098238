"""The two classes of synthesis work, and which queue each goes to.

*Live*: a listener is waiting for the audio as it is made (`/tts_stream`, `/tts`, `/v1/audio/speech`). *Bulk*:
nobody listens in real time (`POST /jobs`, unless the client says otherwise). Live work goes first everywhere: in the
broker (its own queue, which every worker empties before the bulk queue) and inside a worker's batch, where a bulk
segment yields its slot to a live one (paused, then resumed exactly: workers/scheduler.py).
"""

from __future__ import annotations

import enum

from shared.tasks import BULK_QUEUE, SYNTHESIS_QUEUE


class Priority(enum.StrEnum):
    LIVE = "live"
    BULK = "bulk"

    @property
    def queue(self) -> str:
        return SYNTHESIS_QUEUE if self is Priority.LIVE else BULK_QUEUE


# What each endpoint's work is when its request does not say (the job's `origin`).
DEFAULT_PRIORITY = {
    "stream": Priority.LIVE,
    "tts": Priority.LIVE,
    "job": Priority.BULK,
    "book": Priority.BULK,
    "book_redo": Priority.LIVE,  # somebody is listening for the sentence they asked to hear again
}


def priority_for(origin: str, asked: Priority | None) -> Priority:
    return asked if asked is not None else DEFAULT_PRIORITY.get(origin, Priority.LIVE)
