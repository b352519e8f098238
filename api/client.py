"""Telling whether the HTTP client of a request has gone away, while the request still waits for audio.

WSGI gives an application no signal when its client disconnects: a streamed response learns it only when a write
fails, and `/tts` (which writes nothing until the whole WAV exists) would never learn it. Under gunicorn (the farm's
server) the client's socket is in the WSGI environment (`gunicorn.socket`): once the client has closed its end
(FIN or RST), the socket polls readable and a peek reads zero bytes (or fails), which costs one `poll` with a zero
timeout, without consuming anything. What this cannot see: a client whose machine or network vanished without
closing (no FIN ever arrives); TCP itself says nothing then, until a write times out. Under another server (Flask's
test client included) there is no socket, and `gone()` is always False.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import select
import socket
import threading
import time
from typing import Any

from werkzeug.exceptions import RequestTimeout

try:  # the operating system's poll, even where gevent has patched the module (a zero timeout never blocks)
    from gevent.monkey import get_original

    _poll = get_original("select", "poll")
except ImportError:
    _poll = select.poll


def _readable_now(sock: socket.socket) -> bool:
    """poll, not select: an API process holding thousands of connections has descriptors past select's 1024 (select
    refused them: each such listener was taken for gone at its first check)."""
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class ClientGone(Exception):
    """The client closed its connection: nobody is left to receive the response."""


class ClientConnection:
    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock

    @classmethod
    def of(cls, environ: dict[str, Any]) -> ClientConnection:
        sock = environ.get("gunicorn.socket")
        return cls(sock if isinstance(sock, socket.socket) else None)

    def gone(self) -> bool:
        if self._sock is None:
            return False
        try:
            if not _readable_now(self._sock):
                return False
            # Readable with nothing to read: end of stream. Bytes (a pipelined next request) mean it is still there.
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):  # reset by the peer, or already closed
            return True

    def check(self) -> None:
        if self.gone():
            raise ClientGone("the client closed its connection")


class _Deadline:
    def __init__(self, sock: socket.socket, at: float) -> None:
        self.sock, self.at = sock, at
        self.active, self.expired = True, False

    def __lt__(self, other: _Deadline) -> bool:
        return self.at < other.at


class _DeadlineWatch:
    """One thread per API process that cuts off the reading side of sockets whose request body is late.

    A socket timeout bounds each `recv`, not a body: a client trickling a byte a second satisfies every `recv`, and
    gunicorn's body reader loops until it has all it asked for. `shutdown(SHUT_RD)` makes a blocked `recv` return
    at once (end of stream), while the socket can still carry the 408.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Deadline] = []
        self._pid = 0

    def watch(self, sock: socket.socket, at: float) -> _Deadline:
        entry = _Deadline(sock, at)
        with self._cond:
            if self._pid != os.getpid():  # first use in this (forked) process
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, name="client-deadlines", daemon=True).start()
            heapq.heappush(self._heap, entry)
            self._cond.notify()
        return entry

    def finish(self, entry: _Deadline) -> bool:
        """The body is in: stop watching. False when the deadline came first (its socket is being cut)."""
        with self._cond:
            if entry.expired:
                return False
            entry.active = False
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or not self._heap[0].active:
                    if self._heap:
                        heapq.heappop(self._heap)  # finished in time
                    else:
                        self._cond.wait()
                entry = self._heap[0]
                left = entry.at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                entry.expired = True  # under the lock: `finish` and this cannot both win
            with contextlib.suppress(OSError):  # already closed by the client or the server
                entry.sock.shutdown(socket.SHUT_RD)


_watch = _DeadlineWatch()


class _BodyWithDeadline:
    """The request body (`wsgi.input`): past the request's deadline, reading it raises RequestTimeout (408)."""

    def __init__(self, stream: Any, deadline: _Deadline, seconds: float, length: int | None) -> None:
        self._stream, self._deadline, self._seconds = stream, deadline, seconds
        self._left = length  # bytes still to come (None: until the end of a chunked body)
        if length == 0:
            _watch.finish(deadline)

    def _call(self, read: Any, size: int) -> bytes:
        if self._deadline.expired:
            raise self._timeout()
        try:
            data: bytes = read(size)
        except OSError:
            if self._deadline.expired:
                raise self._timeout() from None
            raise
        if self._deadline.expired:  # cut off mid-read: what came is not the whole body
            raise self._timeout()
        if self._left is not None:
            self._left -= len(data)
        if (not data or (self._left is not None and self._left <= 0)) and not _watch.finish(self._deadline):
            # The whole body is in, unless the deadline came first. From now on the request may take as long as its
            # work takes (a /tts waits minutes): its socket must not be cut (that would look like a client leaving).
            raise self._timeout()
        return data

    def _timeout(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request body did not arrive within CLIENT_TIMEOUT_SECONDS={self._seconds:g} s; "
            "send it faster (or compress the recording)"
        )

    def read(self, size: int = -1) -> bytes:
        return self._call(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._call(self._stream.readline, size)


class ClientDeadlines:
    """WSGI middleware bounding how long a request's thread waits on its client, under gunicorn (whose threads
    otherwise wait on a socket for ever): the whole request body must arrive within `seconds` (else 408), and
    every write of the response must be taken within `seconds` (else the connection is dropped, which closes the
    response: its slot is freed and, for /tts_stream, its job cancelled). Reading and writing bytes is all it
    bounds; waiting for audio is bounded by STREAM_IDLE_TIMEOUT_SECONDS and the client checks above."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        sock = environ.get("gunicorn.socket")
        # A WebSocket (api/routes/elevenlabs.py) has no body and lives as long as its conversation: its own
        # inactivity timeout bounds it.
        if not isinstance(sock, socket.socket) or environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            return self.app(environ, start_response)
        deadline = _watch.watch(sock, time.monotonic() + self.seconds)
        length = environ.get("CONTENT_LENGTH")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        body_length = None if chunked else int(length) if length and length.isdigit() else 0
        environ["wsgi.input"] = _BodyWithDeadline(environ["wsgi.input"], deadline, self.seconds, body_length)
        try:
            return self.app(environ, start_response)
        finally:
            _watch.finish(deadline)  # the app is done with the body (read, or never to be)
            sock.settimeout(self.seconds)  # from here on: each write of the response
