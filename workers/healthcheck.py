"""A worker's health check: `python -m workers.healthcheck [NODE ...]`.

Celery-pings the named worker nodes through the broker (default: `celery@<this host>`, the name a worker started
without `-n` takes) and exits 0 when every one answers, else 1 naming those that did not. A worker answers once it
consumes, that is after its model has loaded; a worker whose broker connection or consumer is stuck does not.
"""

from __future__ import annotations

import argparse
import socket
import sys

from workers.celery_app import celery_app


def unanswered(nodes: list[str], timeout: float) -> list[str]:
    replies = celery_app.control.ping(destination=nodes, timeout=timeout, limit=len(nodes))
    answered = {name for reply in replies or [] for name in reply}
    return sorted(set(nodes) - answered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("nodes", nargs="*", help="Celery node names (default: celery@<this host>)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answers")
    args = parser.parse_args(argv)
    nodes = args.nodes or [f"celery@{socket.gethostname()}"]
    missing = unanswered(nodes, args.timeout)
    if missing:
        print(f"no answer within {args.timeout:g} s from: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"ok: {', '.join(nodes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
