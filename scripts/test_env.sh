#!/usr/bin/env bash
# Make sure the programs the tests need are installed: redis-server (the tests start their own on a free port),
# ffmpeg, Debian's docker-compose (to validate docker-compose.yml offline), Debian's chromium (the web page's test
# drives it headless), and PostgreSQL's server programs unless a server the tests can use already answers.
#
# The tests use TEST_POSTGRES_URL if set, else the local server on 127.0.0.1:5432 if it lets user `postgres` in
# without a password, else a throwaway cluster of their own (initdb into a temporary directory, trust
# authentication on a free port, deleted at the end: tools/localfarm.py, PostgresCluster). Nothing here or there
# edits the machine's PostgreSQL configuration or starts its clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -n "${TEST_POSTGRES_URL:-}" ] || reachable 127.0.0.1 5432; then
  scripts/system_deps.sh --redis --compose --browser
else
  scripts/system_deps.sh --redis --compose --browser --postgres  # initdb and pg_ctl for the throwaway cluster
fi
