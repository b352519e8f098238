#!/usr/bin/env bash
# Make sure the services the tests need can be had: redis-server (the tests start their own on a free port)
# and a PostgreSQL server at TEST_POSTGRES_URL (default: the local one, started if it is installed but down).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

url="${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
host=$(url_host "$url"); port=$(url_port "$url" 5432)
if [ -z "${TEST_POSTGRES_URL:-}" ] && ! reachable "$host" "$port"; then
  scripts/system_deps.sh --redis --postgres
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "xtts-farm tests" "$hba"; then
    # A machine that had no PostgreSQL: let the tests connect from localhost without a password.
    printf '# xtts-farm tests\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | cat - "$hba" > "$hba.new"
    mv "$hba.new" "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start
  for _ in $(seq 1 50); do reachable "$host" "$port" && break; sleep 0.2; done
  dbname="${url##*/}"
  runuser -u postgres -- psql -qc "CREATE DATABASE \"$dbname\"" 2>/dev/null || true
else
  scripts/system_deps.sh --redis
fi
reachable "$host" "$port" || { echo "no PostgreSQL at $host:$port for the tests (set TEST_POSTGRES_URL)" >&2; exit 1; }
