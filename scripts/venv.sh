#!/usr/bin/env bash
# Create .venv with the pinned packages (re-run when a requirements file changes).
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "Python 3.11 is required (the model stack is pinned for it); set PYTHON=/path/to/python3.11" >&2; exit 1; }

stamp=.venv/.installed
if [ -f "$stamp" ] && [ -z "$(find requirements*.txt -newer "$stamp")" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
touch "$stamp"
