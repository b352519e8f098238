#!/usr/bin/env bash
# `make run`: set up and start the whole farm (Redis if none answers, the API, WORKERS Celery workers, Flower) under
# supervisord (scripts/supervise.py): a process that exits is restarted, the others keep serving; Ctrl-C stops it all.
#
# DATA_DIR (default ./data) holds what the run keeps: the default SQLite database (DATABASE_URL, unless set), the
# embedded Redis's append-only file, supervisord's configuration, log and control socket.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PORT="${PORT:-8000}" FLOWER_PORT="${FLOWER_PORT:-5555}"
DATA_DIR="$(mkdir -p "${DATA_DIR:-data}" && cd "${DATA_DIR:-data}" && pwd)"
export DATA_DIR DATABASE_URL="${DATABASE_URL:-sqlite:///$DATA_DIR/xtts.db}"
workers="${WORKERS:-1}"
redis_host=$(url_host "$REDIS_URL"); redis_port=$(url_port "$REDIS_URL" 6379)

embedded_redis=()
if ! reachable "$redis_host" "$redis_port"; then
  embedded_redis=(--redis "$redis_host:$redis_port")
  scripts/system_deps.sh --redis
else
  scripts/system_deps.sh
fi
scripts/venv.sh
.venv/bin/alembic upgrade head
.venv/bin/python -m voices_store.files import   # voices dropped in VOICES_DIR

# Flower's credentials, made once for the whole run: a restarted Flower keeps them.
flower_credentials
processes="API http://localhost:$PORT (Swagger UI at /), $workers worker(s), Flower http://localhost:$FLOWER_PORT"
[ ${#embedded_redis[@]} -eq 0 ] || processes="Redis on $redis_host:$redis_port (data in $DATA_DIR/redis), $processes"
echo "starting: $processes; Ctrl-C stops them all"
exec .venv/bin/python scripts/supervise.py run --data-dir "$DATA_DIR" --workers "$workers" "${embedded_redis[@]}"
