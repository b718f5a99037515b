#!/usr/bin/env bash
# Makes the dashboard's browser test runnable: Debian's Chromium at /usr/bin/chromium (apt) and
# playwright-core in ingest/tests/browser/node_modules (`npm ci` from the committed lock file).
# Idempotent: when both are there it does nothing. Playwright's own browser download does not
# work on these machines, so the test drives Debian's Chromium.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BROWSER_DIR="$ROOT/ingest/tests/browser"

log() { printf '[browser-setup] %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi

if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (apt)"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
  command -v npm >/dev/null 2>&1 || { log "error: npm is not installed (needed for playwright-core)" >&2; exit 1; }
  log "npm ci in ingest/tests/browser"
  (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
