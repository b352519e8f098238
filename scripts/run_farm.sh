#!/usr/bin/env bash
# `make run`: set up and start the whole farm (Redis if none answers, API, one worker, Flower); Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PORT="${PORT:-8000}" FLOWER_PORT="${FLOWER_PORT:-5555}"
redis_host=$(url_host "$REDIS_URL"); redis_port=$(url_port "$REDIS_URL" 6379)

start_redis=""
if ! reachable "$redis_host" "$redis_port"; then
  start_redis=1
  scripts/system_deps.sh --redis
else
  scripts/system_deps.sh
fi
scripts/venv.sh
.venv/bin/alembic upgrade head
.venv/bin/python -m voices_store.files import   # voices dropped in VOICES_DIR

# honcho gives every process its own PORT variable, so the Procfile reads the API's port from API_PORT.
export REDIS_PORT="$redis_port" API_PORT="$PORT"
procs=(api worker flower)
[ -n "$start_redis" ] && procs=(redis "${procs[@]}")
echo "starting: ${procs[*]}  (API http://localhost:$PORT, Swagger UI at /, Flower http://localhost:$FLOWER_PORT," \
  "with the credentials it prints unless FLOWER_BASIC_AUTH is set)"
exec .venv/bin/honcho start -f Procfile "${procs[@]}"
