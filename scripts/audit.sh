#!/usr/bin/env bash
# `cargo audit` of Cargo.lock against the RustSec advisory database, with no network fetch (this
# machine cannot reach the database's git host). Fails on a vulnerability; unmaintained and
# yanked crates are reported as warnings.
#
# The database, first found of:
#   1. $CARGO_AUDIT_DB (a checkout of the advisory database);
#   2. ~/.cargo/advisory-db (where cargo audit keeps it on a machine with access);
#   3. .ci/advisory-db.tar.gz, a snapshot committed here (see .ci/README-advisory-db.md for its
#      date and how to refresh it). A snapshot older than 90 days is accepted (--stale) and said so.
# With none of them, the step is skipped, saying why, and exits 0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CARGO_AUDIT_VERSION=0.22.2

say() { printf '[audit] %s\n' "$*"; }

db="${CARGO_AUDIT_DB:-}"
if [ -z "$db" ] && [ -d "$HOME/.cargo/advisory-db/crates" ]; then
  db="$HOME/.cargo/advisory-db"
fi
if [ -z "$db" ] && [ -f "$ROOT/.ci/advisory-db.tar.gz" ]; then
  db="$TARGET_DIR/advisory-db"
  rm -rf "$db"
  mkdir -p "$db"
  tar -xzf "$ROOT/.ci/advisory-db.tar.gz" -C "$db"
  # cargo audit opens the database as a git repository.
  git -C "$db" init -q
  git -C "$db" -c user.name=audit -c user.email=audit@localhost add -A
  git -C "$db" -c user.name=audit -c user.email=audit@localhost commit -q -m "advisory-db snapshot"
  say "using the committed snapshot ($(head -n 1 "$ROOT/.ci/README-advisory-db.md" 2>/dev/null || echo 'undated'))"
fi
if [ -z "$db" ] || [ ! -d "$db/crates" ]; then
  say "SKIPPED: no RustSec advisory database on this machine (set CARGO_AUDIT_DB, or restore .ci/advisory-db.tar.gz)."
  exit 0
fi

if ! cargo audit --version >/dev/null 2>&1; then
  say "installing cargo-audit $CARGO_AUDIT_VERSION (once; a few minutes)"
  cargo install cargo-audit --locked --version "$CARGO_AUDIT_VERSION"
fi
say "cargo audit --db $db --no-fetch --stale"
exec cargo audit --db "$db" --no-fetch --stale
