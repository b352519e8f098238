"""An incremental Server-Sent Events parser (the WHATWG "event stream" format), fed bytes as they arrive.

An event is dispatched only at the blank line that ends it: bytes of an event cut off by a dropped connection are
never dispatched, so a reader that reconnects from the last dispatched id neither loses nor repeats anything.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._cr_ended = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_fields = False
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._decoder.decode(chunk)
        if self._cr_ended and text:
            # The last line ended with a CR at the end of a chunk: a LF right after it belongs to that line end.
            text = text[1:] if text.startswith("\n") else text
            self._cr_ended = False
        self._buffer += text
        events: list[Event] = []
        while True:
            ends = [i for i in (self._buffer.find("\n"), self._buffer.find("\r")) if i >= 0]
            if not ends:
                return events
            end = min(ends)
            line, rest = self._buffer[:end], self._buffer[end + 1 :]
            if self._buffer[end] == "\r":
                if rest.startswith("\n"):
                    rest = rest[1:]
                elif not rest:
                    self._cr_ended = True
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._has_fields = True
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # `retry` and unknown fields are ignored

    def _dispatch(self) -> Event | None:
        if not self._has_fields:
            return None
        if self._id is not None:
            self.last_event_id = self._id
        event = Event(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data, self._id, self._has_fields = "", [], None, False
        return event


def parse(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Events from a stream of byte chunks (an HTTP response body)."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
