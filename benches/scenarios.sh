#!/usr/bin/env bash
# The scenarios recorded in benches/RESULTS.md, one `loadgen --stack` run each. Appends each run's
# JSON line to $OUT (default target/bench-results.jsonl) and its summary, with `uptime` before it,
# to $OUT.txt. Builds first unless SKIP_BUILD=1; BIN_DIR points at other binaries (default
# target/release). Run a subset by naming them: benches/scenarios.sh latency-10k storm
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
BIN_DIR="${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
OUT="${OUT:-$ROOT/target/bench-results.jsonl}"
COMMON=(--fingerprints 1000 --payload-bytes 1024 --drain-timeout 240)
# The maximum-throughput scenarios run closed loop, where events/s = connections / latency: with 64
# connections a third of a core stayed idle (benches/RESULTS.md, 2026-12-01), so they use
# 256, as a storm of many SDK clients would.
MAX=(--connections 256)
OPEN=(--connections 64)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  bash scripts/services.sh
  cargo build --release --bin ingest --bin worker --bin loadgen
fi
mkdir -p "$(dirname "$OUT")"

scenario() {
  local name="$1"
  shift
  printf '== %s: %s\n' "$name" "$*" | tee -a "$OUT.txt"
  uptime | tee -a "$OUT.txt"
  "$BIN_DIR/loadgen" --stack --bin-dir "$BIN_DIR" --log-dir "$ROOT/target/bench-logs" "$@" \
    2> >(tee -a "$OUT.txt" >&2) | sed "s/^{/{\"scenario\":\"$name\",/" | tee -a "$OUT"
}

run() {
  case "$1" in
    # The disk alone, idle: how long its syncs stall with nothing else running (the floor under
    # every latency figure; benches/README.md, "Disk").
    disk)
      printf '== disk: --disk-check 30\n' | tee -a "$OUT.txt"
      "$BIN_DIR/loadgen" --disk-check 30 --log-dir "$ROOT/target/bench-logs" \
        2> >(tee -a "$OUT.txt" >&2) | sed 's/^{/{"scenario":"disk",/' | tee -a "$OUT"
      ;;
    latency-5k) scenario "$1" "${COMMON[@]}" "${OPEN[@]}" --rate 5000 --duration 30 ;;
    latency-10k) scenario "$1" "${COMMON[@]}" "${OPEN[@]}" --rate 10000 --duration 30 ;;
    max-60s) scenario "$1" "${COMMON[@]}" "${MAX[@]}" --duration 60 ;;
    storm) scenario "$1" "${COMMON[@]}" "${MAX[@]}" --fingerprints 1 --duration 20 ;;
    batch) scenario "$1" "${COMMON[@]}" "${MAX[@]}" --batch-share 0.1 --batch-size 100 --duration 20 ;;
    max-prefetch-1000) (export WORKER_PREFETCH=1000; scenario "$1" "${COMMON[@]}" "${MAX[@]}" --duration 30) ;;
    # Cost does not grow with history: max-60s again with a million groups already stored.
    history-1m) scenario "$1" "${COMMON[@]}" "${MAX[@]}" --duration 60 --seed-groups 1000000 ;;
    # Memory stays flat: ten minutes at a fixed rate (RSS sampled every 5 s in the summary).
    long-10min) scenario "$1" "${COMMON[@]}" "${OPEN[@]}" --rate 3000 --duration 600 ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

if [ "$#" -eq 0 ]; then
  set -- disk latency-5k latency-10k max-60s storm batch history-1m
fi
for s in "$@"; do run "$s"; done
