"""Listeners that notice any attempt to read outside an upload: an HTTP server, a TCP listener that never answers,
and a FIFO. The tests of upload decoding, in-process and through the API, use them (fixture `listeners`)."""

from __future__ import annotations

import errno
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LISTEN = "0A"  # the state column of /proc/net/tcp


@dataclass
class Listeners:
    """An HTTP server that answers and records requests, a TCP listener that never answers, and a FIFO that
    notices being opened (a reader blocks in open() until a writer comes, so the watcher cannot miss one)."""

    http_url: str
    silent_url: str
    fifo: Path
    requests: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    fifo_opened: list[bool] = field(default_factory=list)

    def untouched(self) -> bool:
        return not (self.requests or self.connections or self.fifo_opened or self.kernel_connections())

    def kernel_connections(self) -> list[str]:
        """Every TCP connection the kernel knows of to the two listeners, whatever its state (queued, established,
        closing, TIME_WAIT): a connection attempt shows here the moment it happened, even before a listener thread
        accepted it, so checking needs no waiting."""
        ports = {int(url.rsplit(":", 1)[1]) for url in (self.http_url, self.silent_url)}
        found = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, remote, state = line.split()[1:4]
                if state != LISTEN and (int(local.rsplit(":", 1)[1], 16) in ports):
                    found.append(f"{local} <- {remote} state {state}")
        return found


def _serve_http(record: list[str]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\x47" + bytes(187))  # one MPEG-TS packet's worth

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


def _accept_silently(sock: socket.socket, record: list[str], stop: threading.Event) -> None:
    held = []
    while not stop.is_set():
        try:
            conn, peer = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        record.append(f"{peer[0]}:{peer[1]}")
        held.append(conn)  # kept open, never answered: the client would wait forever
    for conn in held:
        conn.close()


def _watch_fifo(fifo: Path, record: list[bool], stop: threading.Event) -> None:
    while not stop.wait(0.005):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader: nobody opened it
                continue
            raise
        record.append(True)
        os.close(fd)


@contextmanager
def running_listeners(tmp_path: Path) -> Iterator[Listeners]:
    stop = threading.Event()
    fifo = tmp_path / "secret.ts"  # a media extension, which ffmpeg's HLS demuxer asks of local segments
    os.mkfifo(fifo)
    silent = socket.create_server(("127.0.0.1", 0))
    silent.settimeout(0.05)
    found = Listeners(http_url="", silent_url=f"http://127.0.0.1:{silent.getsockname()[1]}", fifo=fifo)
    server = _serve_http(found.requests)
    found.http_url = f"http://127.0.0.1:{server.server_address[1]}"
    threads = [
        threading.Thread(target=_accept_silently, args=(silent, found.connections, stop), daemon=True),
        threading.Thread(target=_watch_fifo, args=(fifo, found.fifo_opened, stop), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield found
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        for thread in threads:
            thread.join(5)
        silent.close()
