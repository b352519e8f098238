"""Gunicorn's options for the API, written once: `make run` (scripts/supervise.py), the Docker image and the tests'
farm all start `gunicorn -c gunicorn.conf.py api.wsgi:app`."""

import ctypes
import os
import resource
import signal
import sys
from typing import Any

from shared import logs
from shared.settings import get_settings

_settings = get_settings()

bind = f"{_settings.HOST}:{_settings.PORT}"
workers = _settings.API_PROCESSES
# Streaming responses spend their lives waiting for audio. Under gevent (the default) each connection is a greenlet
# and the libraries it uses are cooperative (gunicorn patches the standard library before it loads the app; psycopg
# 3 and redis-py then yield while they wait), and the waits themselves share one Redis reader (api/fanout.py):
# thousands of listeners a process. MAX_CONCURRENT_REQUESTS bounds the synthesis responses per process, and as many
# again may wait for their turn (api/limits.py); every other endpoint has 256 connections besides those. Under
# gthread, threads carry the same numbers.
worker_class = _settings.API_WORKER_CLASS
worker_connections = 2 * _settings.MAX_CONCURRENT_REQUESTS + 256
threads = max(64, 2 * _settings.MAX_CONCURRENT_REQUESTS + 32)
# A /tts request waits for the whole synthesis; long texts take minutes.
timeout = 600
# On SIGTERM: open streams run SHUTDOWN_GRACE_SECONDS more, then end cleanly (api/lifecycle.py); gunicorn waits
# 10 s beyond that for them to close.
graceful_timeout = int(_settings.SHUTDOWN_GRACE_SECONDS) + 10
accesslog = "-"
# gunicorn's own lines in the farm's format (LOG_FORMAT), with the job id of a job's request (shared/logs.py).
logconfig_dict = logs.gunicorn_logconfig(_settings)


def post_worker_init(worker: Any) -> None:
    """Chain the app's graceful shutdown onto the SIGTERM handler gunicorn gave this worker."""
    from api.lifecycle import lifecycle

    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        lifecycle.begin_shutdown()
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def post_fork(server: Any, worker: Any) -> None:
    """A worker dies with its master. A master killed outright (SIGKILL, the out-of-memory killer) would otherwise
    leave its worker holding the listening socket while it finishes its open streams (up to graceful_timeout): the
    master that `make run`'s supervisor starts in its place could not bind the port meanwhile, and connections
    queued on the orphan's socket would wait unanswered. Its listeners resume from their cursor on the new master."""
    _raise_open_files(worker_connections + 1024)
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != worker.ppid:  # the master died before the line above
        os._exit(1)


def _raise_open_files(wanted: int) -> None:
    """A connection is a file descriptor, and so is each Redis and database connection: lift the soft limit (1024
    on many systems) towards what the connections need, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
