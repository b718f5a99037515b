#!/usr/bin/env bash
# `make bench`: starts the local services if needed, builds the release ingest, worker and
# loadgen, then runs `loadgen --stack` (its own database `faultline_bench`, its own queue prefix,
# ingest and worker on free ports, stopped afterwards). Arguments go to loadgen; without any, the
# default scenario runs: maximum throughput for 60 s over 256 connections, 1,000 fingerprints,
# ~1 KB single-event posts. The JSON line goes to stdout, the summary to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

bash scripts/services.sh
cargo build --release --bin ingest --bin worker --bin loadgen
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"

if [ "$#" -eq 0 ]; then
  set -- --duration 60 --connections 256 --fingerprints 1000 --payload-bytes 1024
fi
exec "$BIN_DIR/loadgen" --stack --bin-dir "$BIN_DIR" --log-dir "$ROOT/target/bench-logs" "$@"
