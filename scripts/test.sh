#!/usr/bin/env bash
# `make test`: starts the local services, then runs the whole workspace's tests against them
# (cargo-nextest when installed, else cargo test). Extra arguments go to the test runner, e.g.
#   scripts/test.sh -p worker              scripts/test.sh a_redelivered_event_is_counted_once
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

# shellcheck source=scripts/dotenv.sh
. "$ROOT/scripts/dotenv.sh"
load_dotenv "$ROOT/.env"

bash "$ROOT/scripts/services.sh"
bash "$ROOT/scripts/browser-setup.sh" # Chromium + playwright-core for ingest/tests/dashboard.rs

# Tests create a throwaway database per test through TEST_DATABASE_URL (a maintenance database).
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# With committed sqlx metadata, compile from it even when DATABASE_URL is set (e.g. in .env).
if [ -d "$ROOT/.sqlx" ]; then export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"; fi

if [ "${USE_CARGO_TEST:-0}" != 1 ] && cargo nextest --version >/dev/null 2>&1; then
  echo "[test] cargo nextest run --workspace $*"
  exec cargo nextest run --workspace "$@"
else
  echo "[test] cargo test --workspace --all-targets $*"
  exec cargo test --workspace --all-targets "$@"
fi
