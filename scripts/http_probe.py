"""Health-check probe for the containers (docker-compose.yml): `python scripts/http_probe.py URL`.

Exits 0 when URL answers 200 within 5 seconds, else 1 with the reason on one line. The standard library only, so
that it runs in any of the farm's images without curl.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 5.0) -> str | None:
    """None when `url` answers 200; otherwise why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: http_probe.py URL")
    problem = probe(sys.argv[1])
    if problem:
        sys.exit(f"{sys.argv[1]}: {problem}")
