#!/usr/bin/env bash
# Flower, boxed in: it listens on 127.0.0.1 unless FLOWER_ADDRESS says otherwise, and never without credentials.
# Flower reads FLOWER_ADDRESS, FLOWER_PORT and FLOWER_BASIC_AUTH (user:password) from the environment itself.
# Without FLOWER_BASIC_AUTH, this run gets generated credentials, printed once here.
set -euo pipefail
cd "$(dirname "$0")/.."

export FLOWER_ADDRESS="${FLOWER_ADDRESS:-127.0.0.1}" FLOWER_PORT="${FLOWER_PORT:-5555}"
if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  export FLOWER_BASIC_AUTH="admin:$password"
  echo "Flower: no FLOWER_BASIC_AUTH was given; this run's credentials are  $FLOWER_BASIC_AUTH"
fi
case "$FLOWER_BASIC_AUTH" in
  *:?*) ;;
  *) echo "FLOWER_BASIC_AUTH must be user:password" >&2; exit 1 ;;
esac
celery=.venv/bin/celery
[ -x "$celery" ] || celery=celery  # the Docker image installs into the system Python
exec "$celery" -A workers.celery_app flower
