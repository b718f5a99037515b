#!/usr/bin/env bash
# Property-based API testing of ingest against its own OpenAPI document: schemathesis generates
# requests for every documented operation and checks that none answers 5xx, that every answer
# matches the documented schema, and that every status code is documented.
#
# Runs a fresh ingest (debug build) on a free port against its own new database, queue prefix and
# Redis prefix, with a new admin key, then removes them all. The local services must be running
# (scripts/services.sh). Python's schemathesis is installed once into target/schemathesis-venv.
#
# Settings (environment): SCHEMATHESIS_MAX_EXAMPLES (per operation, default 50),
# SCHEMATHESIS_TIME_LIMIT (seconds for the whole run, default 240), TEST_DATABASE_URL (a
# maintenance database to create the throwaway one from), AMQP_URL, REDIS_URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
TIME_LIMIT="${SCHEMATHESIS_TIME_LIMIT:-240}"
ADMIN_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/schemathesis-venv"
WORK="$TARGET_DIR/schemathesis"
PYTHON="${PYTHON:-python3}"

say() { printf '[schemathesis] %s\n' "$*"; }
die() { printf '[schemathesis] error: %s\n' "$*" >&2; exit 1; }

# --- the tool, once ------------------------------------------------------------------------------
if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n 1)" != "$SCHEMATHESIS_VERSION" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- a throwaway installation ---------------------------------------------------------------------
say "building ingest"
if [ -d "$ROOT/.sqlx" ]; then export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"; fi
cargo build --quiet --bin ingest
BIN="$TARGET_DIR/debug/ingest"

TAG="st_$(date +%s)_$$"
DB_URL="${ADMIN_URL%/*}/$TAG"
export DATABASE_URL="$DB_URL" QUEUE_PREFIX="$TAG" REDIS_PREFIX="$TAG"
export PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Rate limits off: the generated requests would otherwise mostly measure the limiter (429).
export RATE_LIMIT_INGEST=0 RATE_LIMIT_ANALYTICS=0 RATE_LIMIT_OTHER=0
export RUST_LOG="${RUST_LOG:-warn}"
mkdir -p "$WORK"
LOG="$WORK/ingest-$TAG.log"
INGEST_PID=""

cleanup() {
  local rc=$?
  if [ -n "$INGEST_PID" ] && kill -0 "$INGEST_PID" 2>/dev/null; then
    kill -TERM "$INGEST_PID" 2>/dev/null || true
    wait "$INGEST_PID" 2>/dev/null || true
  fi
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$TAG\" WITH (FORCE)" >/dev/null 2>&1 || true
  for q in "$TAG.events" "$TAG.events.dead"; do
    rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
  done
  redis-cli -u "$REDIS_URL" --scan --pattern "$TAG*" 2>/dev/null | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

say "database $TAG, port $PORT"
psql -q "$ADMIN_URL" -c "CREATE DATABASE \"$TAG\"" >/dev/null
"$BIN" migrate
KEY="$("$BIN" create-key --name schemathesis --permissions ingest,read,write,admin 2>/dev/null | tail -n 1)"
[ -n "$KEY" ] || die "ingest create-key printed no key"

"$BIN" >"$LOG" 2>&1 </dev/null &
INGEST_PID=$!
deadline=$((SECONDS + 60))
healthy() {
  "$PYTHON" -c 'import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=5).status != 200)' \
    "http://127.0.0.1:$PORT/health" 2>/dev/null
}
until healthy; do
  kill -0 "$INGEST_PID" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "ingest exited"; }
  [ "$SECONDS" -lt "$deadline" ] || die "ingest did not become healthy; see $LOG"
  sleep 0.5
done

# --- the run --------------------------------------------------------------------------------------
# Excluded: the integration test endpoint, which sends a real notification to whatever address the
# generated configuration names (traffic to arbitrary hosts has no place in a test).
say "running (at most $MAX_EXAMPLES examples per operation, ${TIME_LIMIT}s)"
set +e
# From the work directory: schemathesis keeps a cache (.schemathesis/) in the current directory.
cd "$WORK"
timeout --signal=INT "$TIME_LIMIT" "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance \
  --header "X-API-Key: $KEY" \
  --exclude-path-regex '/test$' \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 10 \
  --seed 1 \
  --phases examples,coverage,fuzzing \
  --no-color
rc=$?
set -e
if [ "$rc" -eq 124 ]; then
  die "schemathesis did not finish within ${TIME_LIMIT}s"
fi
if ! kill -0 "$INGEST_PID" 2>/dev/null; then
  tail -n 20 "$LOG" >&2
  die "ingest died during the run"
fi
if grep -q ' ERROR ' "$LOG"; then
  say "ingest logged errors during the run:"
  grep ' ERROR ' "$LOG" | head -n 20
fi
exit "$rc"
