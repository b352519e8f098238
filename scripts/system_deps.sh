#!/usr/bin/env bash
# Install the Debian packages the farm needs, only those missing:
#   ffmpeg        always (the API decodes uploads with it; torchcodec, which coqui-tts imports, links its libraries)
#   redis-server  when asked (`--redis`): make run starts one if none answers at REDIS_URL; the tests start their own
#   postgresql    when asked (`--postgres`): the tests need a PostgreSQL server
#   docker-compose when asked (`--compose`): Debian's Compose 1.29, which validates docker-compose.yml offline
#                 (`docker-compose config -q`, no Docker daemon needed); the tests do
#   chromium      when asked (`--browser`): Debian's browser, driven headless by Playwright in the web page's test
#                 (tests/test_web_page.py; Playwright never downloads a browser of its own)
set -euo pipefail

want=(ffmpeg)
for arg in "$@"; do
  case "$arg" in
    --redis) command -v redis-server >/dev/null || want+=(redis-server) ;;
    --postgres) ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql) ;;
    --compose) command -v docker-compose >/dev/null || want+=(docker-compose) ;;
    --browser) [ -x /usr/bin/chromium ] || want+=(chromium) ;;
  esac
done
missing=()
for pkg in "${want[@]}"; do
  case "$pkg" in
    ffmpeg) command -v ffmpeg >/dev/null || missing+=(ffmpeg) ;;
    *) missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${missing[@]}" \
  || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
