#!/usr/bin/env bash
# The embedded Supabase-compatible database: PostgreSQL 15 + pg_cron + pgcrypto under .local/,
# on 127.0.0.1:54322, made to look like Supabase (supabase/embedded/), migrated with the real
# Supabase CLI (--db-url) and seeded. Idempotent: run it as often as you like.
#
#   scripts/db.sh up        install what is missing, init, start, shim, migrate, seed
#   scripts/db.sh start     only start the server (init if needed)
#   scripts/db.sh migrate   apply pending migrations with the Supabase CLI, then the seed
#   scripts/db.sh stop      stop the server
#   scripts/db.sh reset     throw the cluster away and build it again (development)
#   scripts/db.sh status    is it running?
#   scripts/db.sh url       print the DATABASE_URL
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL="${INSTAGRAM_DM_DB_DIR:-$ROOT/.local}"
PGDATA="$LOCAL/pgdata"
RUNDIR="$LOCAL/run"
LOG="$LOCAL/postgres.log"
PORT="${INSTAGRAM_DM_DB_PORT:-54322}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
URL="postgresql://postgres:postgres@127.0.0.1:$PORT/postgres"
SUPABASE="$ROOT/node_modules/.bin/supabase"
SUPABASE_VERSION=2.117.0

die() { printf 'db: %s\n' "$*" >&2; exit 1; }
say() { printf 'db: %s\n' "$*" >&2; }

as_pg() {
  # initdb and postgres refuse to run as root: run them as the postgres OS user.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_packages() {
  local missing=()
  [ -x "$PGBIN/postgres" ] || missing+=(postgresql-15)
  [ -f /usr/share/postgresql/15/extension/pg_cron.control ] || missing+=(postgresql-15-cron)
  # plpgsql_check: `supabase db lint` creates it (in a transaction it rolls back) to check every function
  [ -f /usr/share/postgresql/15/extension/plpgsql_check.control ] || missing+=(postgresql-15-plpgsql-check)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  else
    die "missing ${missing[*]}; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
}

ensure_cli() {
  if [ -x "$SUPABASE" ] && [ "$("$SUPABASE" --version 2>/dev/null)" = "$SUPABASE_VERSION" ]; then return 0; fi
  command -v npm >/dev/null || die "npm is missing; install Node.js 20 (it brings npm), then rerun"
  say "installing the Supabase CLI $SUPABASE_VERSION into node_modules/"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || die "npm ci failed (is the npm registry reachable?)"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

init_cluster() {
  if [ -d "$PGDATA" ] && [ ! -f "$PGDATA/PG_VERSION" ] && [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
    die "$PGDATA is not a usable cluster (no PG_VERSION); remove it with: rm -rf $PGDATA"
  fi
  if [ -f "$PGDATA/PG_VERSION" ]; then
    [ "$(cat "$PGDATA/PG_VERSION")" = 15 ] || die "$PGDATA holds PostgreSQL $(cat "$PGDATA/PG_VERSION"), not 15; remove it with: rm -rf $PGDATA"
    return 0
  fi
  say "creating a cluster in $PGDATA"
  mkdir -p "$PGDATA" "$RUNDIR"
  local pwfile="$LOCAL/.pwfile"
  printf 'postgres\n' > "$pwfile"
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$LOCAL"; fi
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C \
      --auth-host=scram-sha-256 --auth-local=trust >/dev/null || die "initdb failed"
  rm -f "$pwfile"
  cat >> "$PGDATA/postgresql.conf" <<CONF

# --- instagram-dm embedded settings ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUNDIR'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
max_connections = 200
log_min_messages = warning
log_parameter_max_length_on_error = 0
CONF
}

start_server() {
  ensure_packages
  init_cluster
  if running; then return 0; fi
  if port_taken; then
    die "port $PORT on 127.0.0.1 is taken by another process; stop it (e.g. another Postgres or 'supabase start') or set INSTAGRAM_DM_DB_PORT"
  fi
  mkdir -p "$RUNDIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$RUNDIR" "$LOCAL"; touch "$LOG"; chown postgres:postgres "$LOG"; fi
  rm -f "$PGDATA/postmaster.pid"
  if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOG" -w -t 30 start >/dev/null; then
    die "PostgreSQL did not start: $(grep -E 'FATAL|ERROR|PANIC' "$LOG" | tail -n 1)"
  fi
}

psql_url() { PGOPTIONS="-c client_min_messages=warning" PGCONNECT_TIMEOUT=5 psql "$URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

migrate() {
  ensure_cli
  for f in "$ROOT"/supabase/embedded/*.sql; do
    psql_url -f "$f" >/dev/null || die "applying $(basename "$f") failed"
  done
  (cd "$ROOT" && "$SUPABASE" migration up --db-url "$URL?sslmode=disable" >"$LOCAL/migrate.log" 2>&1) \
    || die "supabase migration up failed: $(grep -iE 'error|fail' "$LOCAL/migrate.log" | tail -n 3)"
  psql_url -f "$ROOT/supabase/seed.sql" >/dev/null || die "applying supabase/seed.sql failed"
}

case "${1:-up}" in
  up) start_server; migrate; say "ready: $URL" ;;
  start) start_server ;;
  migrate) migrate ;;
  stop) if running; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; fi ;;
  reset)
    if running; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; fi
    rm -rf "$PGDATA"; start_server; migrate; say "reset: $URL" ;;
  status) if running; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 3; fi ;;
  url) echo "$URL" ;;
  *) die "unknown command '$1' (up|start|migrate|stop|reset|status|url)" ;;
esac
