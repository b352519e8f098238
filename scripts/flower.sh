#!/usr/bin/env bash
# Flower, boxed in: it listens on 127.0.0.1 unless FLOWER_ADDRESS says otherwise, and never without credentials.
# Flower reads FLOWER_ADDRESS, FLOWER_PORT and FLOWER_BASIC_AUTH (user:password) from the environment itself.
# Without FLOWER_BASIC_AUTH, this run gets generated credentials, printed once here (`make run` makes them once for
# the whole run, so that a restarted Flower keeps them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export FLOWER_ADDRESS="${FLOWER_ADDRESS:-127.0.0.1}" FLOWER_PORT="${FLOWER_PORT:-5555}"
flower_credentials
case "$FLOWER_BASIC_AUTH" in
  *:?*) ;;
  *) echo "FLOWER_BASIC_AUTH must be user:password" >&2; exit 1 ;;
esac
celery=.venv/bin/celery
[ -x "$celery" ] || celery=celery  # the Docker image installs into the system Python
exec "$celery" -A workers.celery_app flower
