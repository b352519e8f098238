"""Telling whether the HTTP client of a request has gone away, while the request still waits for audio.

WSGI gives an application no signal when its client disconnects: a streamed response learns it only when a write
fails, and `/tts` (which writes nothing until the whole WAV exists) would never learn it. Under gunicorn (the farm's
server) the client's socket is in the WSGI environment (`gunicorn.socket`): once the client has closed its end
(FIN or RST), the socket polls readable and a peek reads zero bytes (or fails), which costs one `select` with a zero
timeout, without consuming anything. What this cannot see: a client whose machine or network vanished without
closing (no FIN ever arrives); TCP itself says nothing then, until a write times out. Under another server (Flask's
test client included) there is no socket, and `gone()` is always False.
"""

from __future__ import annotations

import select
import socket
from typing import Any


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
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
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
