#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it; no browser download). Idempotent and
# quiet: nothing happens when it is there; as root it is installed with apt-get (as scripts/db.sh does for
# PostgreSQL), otherwise it stops with the exact command (the browser tests never skip).
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "browser: installing chromium with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium >/dev/null || { echo "browser: apt-get install chromium failed" >&2; exit 1; }
else
  echo "browser: $CHROMIUM is missing; install it: sudo apt-get install -y chromium" >&2
  exit 1
fi
