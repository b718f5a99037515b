#!/usr/bin/env bash
# `make run`: starts the local services, builds the three binaries, migrates, creates the dev API
# key, then runs ingest, worker and alerter in the background (logs in .run/) and stays in the
# foreground until Ctrl-C or SIGTERM, which stops all three. Exits (stopping the others) as soon
# as one of them dies. Settings come from the environment, then from .env if present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

# shellcheck source=scripts/dotenv.sh
. "$ROOT/scripts/dotenv.sh"
load_dotenv "$ROOT/.env"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/faultline}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export PORT="${PORT:-8080}"
export WORKER_PORT="${WORKER_PORT:-8081}"
export ALERTER_PORT="${ALERTER_PORT:-8082}"
export RUST_LOG="${RUST_LOG:-info}"
export QUEUE_PREFIX="${QUEUE_PREFIX:-faultline}"
# Development only: lets alert webhooks reach receivers on localhost (refused by default: SSRF).
export ALERTER_ALLOW_PRIVATE_TARGETS="${ALERTER_ALLOW_PRIVATE_TARGETS:-true}"

DEV_API_KEY="${DEV_API_KEY:-test-api-key}"
RUN_DIR="$ROOT/.run"
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-60}" # seconds ingest gets to answer /health
STOP_TIMEOUT="${STOP_TIMEOUT:-15}"     # seconds between SIGTERM and SIGKILL on shutdown
# Follow the logs on the terminal (default: when stdout is a terminal).
if [ -t 1 ]; then RUN_TAIL="${RUN_TAIL:-1}"; else RUN_TAIL="${RUN_TAIL:-0}"; fi

say() { printf '[run] %s\n' "$*"; }
die() { printf '[run] error: %s\n' "$*" >&2; exit 1; }

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the HTTP status code of GET http://127.0.0.1:$1$2, or nothing when nobody answers.
http_status() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    IFS=' ' read -r -t 5 _ code _ <&3 || exit 1
    while IFS= read -r -t 5 _; do :; done <&3 # read to the end so the server sees a clean close
    printf '%s' "$code"
  ) 2>/dev/null || true
}

# Refuses to start when a port the binaries need is taken, naming the culprit if it is ours.
check_ports() {
  local var port name pidfile
  for var in PORT WORKER_PORT ALERTER_PORT; do
    port="${!var}"
    if tcp_open "$port"; then
      for name in ingest worker alerter; do
        pidfile="$RUN_DIR/$name.pid"
        # Ours only if that pid still runs our binary (pids get reused).
        if [ -f "$pidfile" ] && [ "$(readlink "/proc/$(cat "$pidfile")/exe" 2>/dev/null)" = "$BIN_DIR/$name" ]; then
          say "a previous 'make run' still runs $name (pid $(cat "$pidfile")); stop it with: kill $(cat "$pidfile")"
        fi
      done
      die "port $port ($var) is already in use: stop whatever listens there (ss -ltnp 'sport = :$port') or set $var to a free port"
    fi
  done
}

PIDS=()
NAMES=()
TAIL_PID=""
STOPPED=0

# Stops every binary this script started: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
stop_all() {
  [ "$STOPPED" -eq 0 ] || return 0
  STOPPED=1
  local i alive deadline
  if [ "${#PIDS[@]}" -gt 0 ]; then
    for i in "${!PIDS[@]}"; do
      if kill -0 "${PIDS[$i]}" 2>/dev/null; then
        say "stopping ${NAMES[$i]} (pid ${PIDS[$i]})"
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
      fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
      alive=()
      for i in "${!PIDS[@]}"; do
        kill -0 "${PIDS[$i]}" 2>/dev/null && alive+=("$i")
      done
      [ "${#alive[@]}" -eq 0 ] && break
      if [ "$SECONDS" -ge "$deadline" ]; then
        for i in "${alive[@]}"; do
          say "${NAMES[$i]} did not stop within ${STOP_TIMEOUT}s; killing it"
          kill -KILL "${PIDS[$i]}" 2>/dev/null || true
        done
        break
      fi
      sleep 0.2
    done
    for i in "${!PIDS[@]}"; do
      wait "${PIDS[$i]}" 2>/dev/null || true
      rm -f "$RUN_DIR/${NAMES[$i]}.pid"
    done
  fi
  if [ -n "$TAIL_PID" ]; then
    kill "$TAIL_PID" 2>/dev/null || true
    wait "$TAIL_PID" 2>/dev/null || true
  fi
}

on_signal() {
  trap '' INT TERM
  printf '\n'
  say "received SIG$1, shutting down"
  stop_all
  say "stopped"
  trap - EXIT
  exit 0
}

trap stop_all EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# Starts "$2..." in the background as $1, logging to .run/$1.log (the previous log is kept as .prev).
start() {
  local name=$1; shift
  local logfile="$RUN_DIR/$name.log"
  [ -f "$logfile" ] && mv -f "$logfile" "$logfile.prev"
  "$@" >"$logfile" 2>&1 </dev/null &
  PIDS+=("$!")
  NAMES+=("$name")
  echo "$!" >"$RUN_DIR/$name.pid"
  say "started $name (pid $!, log .run/$name.log)"
}

# Exits with a message when a started binary is no longer running.
check_alive() {
  local i rc
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      rc=0
      wait "${PIDS[$i]}" 2>/dev/null || rc=$?
      rm -f "$RUN_DIR/${NAMES[$i]}.pid"
      printf '[run] error: %s exited unexpectedly (status %s); last lines of .run/%s.log:\n' \
        "${NAMES[$i]}" "$rc" "${NAMES[$i]}" >&2
      tail -n 20 "$RUN_DIR/${NAMES[$i]}.log" | sed 's/^/    /' >&2
      exit 1 # the EXIT trap stops the others
    fi
  done
}

mkdir -p "$RUN_DIR"
check_ports

bash "$ROOT/scripts/services.sh"

say "building release binaries"
# With committed sqlx metadata, build from it rather than from the (maybe unmigrated) database.
if [ -d "$ROOT/.sqlx" ]; then export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"; fi
cargo build --release --bin ingest --bin worker --bin alerter

say "applying migrations"
"$BIN_DIR/ingest" migrate

say "creating the dev API key"
key_out="$("$BIN_DIR/ingest" create-key --name dev --permissions ingest,read,write,admin --key "$DEV_API_KEY")"
key="$(printf '%s\n' "$key_out" | tail -n 1)"
[ -n "$key" ] || die "ingest create-key printed no key"

check_ports # again: the build may have taken minutes
start ingest "$BIN_DIR/ingest"
# One glibc malloc arena for the worker, and blocks over 128 KiB given back to the system when freed:
# less RSS for the same speed (benches/RESULTS.md, sixth and fifteenth sessions).
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-1}" MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}" \
  start worker "$BIN_DIR/worker"
start alerter "$BIN_DIR/alerter"

if [ "$RUN_TAIL" = 1 ]; then
  tail -n +1 -F "$RUN_DIR/ingest.log" "$RUN_DIR/worker.log" "$RUN_DIR/alerter.log" 2>/dev/null &
  TAIL_PID=$!
fi

say "waiting for http://127.0.0.1:$PORT/health"
deadline=$((SECONDS + HEALTH_TIMEOUT))
status=""
while :; do
  check_alive
  status="$(http_status "$PORT" /health)"
  [ "$status" = 200 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    die "ingest did not answer 200 on /health within ${HEALTH_TIMEOUT}s (last answer: ${status:-none}); see .run/ingest.log"
  fi
  sleep 0.5
done

cat <<EOF

[run] Faultline is up.
  ingest   http://localhost:$PORT        (metrics: /metrics, health: /health)
  dashboard http://localhost:$PORT/      (open in a browser, enter the dev key below)
  worker   http://localhost:$WORKER_PORT/health
  alerter  http://localhost:$ALERTER_PORT/health
  logs     .run/ingest.log .run/worker.log .run/alerter.log

  Dev API key: $key

  Post an error:
    curl -X POST http://localhost:$PORT/api/errors -H 'Content-Type: application/json' -H 'X-API-Key: $key' -d '{"level":"error","message":"Database connection failed","source":"backend"}'
  List errors:
    curl http://localhost:$PORT/api/errors -H 'X-API-Key: $key'

  Ctrl-C stops all three.

EOF

while :; do
  check_alive
  # Sleep in the background so a signal is handled at once rather than after the sleep.
  sleep 1 &
  wait $! || true
done
