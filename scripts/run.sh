#!/usr/bin/env bash
# `make run`: bring the embedded database up (its port and folder from INSTAGRAM_DM_DB_PORT / _DIR), start
# the Meta sandbox, the API and the worker
# with development settings, print the URL to open, and stop them all on Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ENV_FILE=.local/dev.env
BIN=.venv/bin
API_PORT=54330
SANDBOX_PORT=54331

# A second `make run` must not touch the first one's sandbox, logs or database: refuse before anything.
for port in $API_PORT $SANDBOX_PORT; do
  if "$BIN/python" -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))) != 0)" "$port"; then
    echo "run: port $port is already in use (is another make run up? stop it with Ctrl-C first)" >&2
    exit 1
  fi
done

scripts/db.sh up
DB_URL=$(scripts/db.sh url)

if [ ! -f "$ENV_FILE" ]; then
  mkdir -p .local
  key=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(48))')
  cat > "$ENV_FILE" <<ENV
# Written by make run; development only. Delete it to regenerate.
INSTAGRAM_DM_ENV=development
INSTAGRAM_APP_ID=sandbox-app-id
INSTAGRAM_APP_SECRET=sandbox-app-secret
INSTAGRAM_TOKEN_ENCRYPTION_KEY=$key
INSTAGRAM_OAUTH_REDIRECT_URI=http://127.0.0.1:54330/functions/v1/instagram-oauth-callback
INSTAGRAM_RETURN_URL=http://127.0.0.1:54330/dev
INSTAGRAM_WEBHOOK_VERIFY_TOKEN=dev-verify-token
META_GRAPH_BASE_URL=http://127.0.0.1:54331
META_OAUTH_DIALOG_BASE_URL=http://127.0.0.1:54331
DATABASE_URL=$DB_URL
SUPABASE_JWT_SECRET=super-secret-jwt-token-with-at-least-32-characters-long
LOG_LEVEL=INFO
ENV
fi
# Both ways to connect against the sandbox: Instagram Login's hosts are path prefixes of the sandbox's origin
# (added to an older dev.env too; the id and secret are the sandbox's default Instagram app).
if ! grep -q '^INSTAGRAM_LOGIN_APP_ID=' "$ENV_FILE"; then
  cat >> "$ENV_FILE" <<ENV
INSTAGRAM_LOGIN_APP_ID=sandbox-ig-app-id
INSTAGRAM_LOGIN_APP_SECRET=sandbox-ig-app-secret
INSTAGRAM_LOGIN_DIALOG_BASE_URL=http://127.0.0.1:$SANDBOX_PORT/instagram/www
INSTAGRAM_LOGIN_API_BASE_URL=http://127.0.0.1:$SANDBOX_PORT/instagram/api
INSTAGRAM_LOGIN_GRAPH_BASE_URL=http://127.0.0.1:$SANDBOX_PORT/instagram/graph
ENV
fi
# The database is the one scripts/db.sh manages (INSTAGRAM_DM_DB_PORT / _DIR), also in an older dev.env.
sed -i "s|^DATABASE_URL=.*|DATABASE_URL=$DB_URL|" "$ENV_FILE"
# The processes read $ENV_FILE themselves, and what is set in the environment wins over it.

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_for() {
  for _ in $(seq 1 100); do
    if "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run: $2 did not come up at $1 (see .local/$2.log)" >&2; exit 1
}

# The sandbox sends its signed webhook deliveries to this API.
SANDBOX_WEBHOOK_URL=${SANDBOX_WEBHOOK_URL:-http://127.0.0.1:$API_PORT/functions/v1/instagram-webhook} \
  "$BIN/instagram-dm" --env-file "$ENV_FILE" sandbox --port $SANDBOX_PORT > .local/sandbox.log 2>&1 & pids+=($!)
wait_for http://127.0.0.1:$SANDBOX_PORT/_sandbox/state sandbox
# Demo: long-lived tokens last 5 days instead of 60, so a fresh connect is already due for refresh; attachment
# URLs expire after 2 minutes, so "Receive a photo" shows the copy outliving Meta's link (docs/media.md).
"$BIN/python" -c "import httpx; httpx.post('http://127.0.0.1:54331/_sandbox/config', json={'long_lived_seconds': 432000, 'media_ttl_seconds': 120}).raise_for_status()"
"$BIN/instagram-dm" --env-file "$ENV_FILE" api --port $API_PORT > .local/api.log 2>&1 & pids+=($!)
wait_for http://127.0.0.1:$API_PORT/readyz api
"$BIN/instagram-dm" --env-file "$ENV_FILE" worker > .local/worker.log 2>&1 & pids+=($!)

"$BIN/instagram-dm" --env-file "$ENV_FILE" doctor || true
cat <<MSG

  instagram-dm is running (logs in .local/*.log):
    sandbox (Meta stand-in)  http://127.0.0.1:54331
    API                      http://127.0.0.1:54330
    worker                   pid ${pids[2]}

  Open http://127.0.0.1:54330/dev (the Messages page): sign in as Dana Admin, press "Connect Instagram",
  then "Send the DM" in the sandbox panel: the sandbox signs a webhook delivery and POSTs it to the
  API; the worker turns it into a conversation, a message and a lead, and the page shows it.
  The sandbox issues 5-day tokens here, so a new connection is due for refresh at once:
    .venv/bin/instagram-dm --env-file $ENV_FILE refresh-now --all-due
  then reload /dev/status: last_refreshed_at moves, and since a 5-day token re-exchanged is still a
  5-day token, the row shows the early warning token_not_extended (as when Meta does not extend).
  For a refresh that extends: give new tokens 60 days, then refresh again:
    curl -X POST localhost:54331/_sandbox/config -H 'content-type: application/json' -d '{"long_lived_seconds": 5184000}'
    .venv/bin/instagram-dm --env-file $ENV_FILE refresh-now --all-due

  Ctrl-C stops everything (the database keeps running; scripts/db.sh stop).
MSG
status=0
wait -n "${pids[@]}" || status=$?
echo "run: a process stopped (exit $status); see .local/sandbox.log, .local/api.log, .local/worker.log" >&2
exit "$status"
