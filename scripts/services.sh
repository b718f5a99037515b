#!/usr/bin/env bash
# Makes sure PostgreSQL, RabbitMQ and Redis are installed and answering on 127.0.0.1 (Debian
# bookworm), that postgres://postgres:postgres@127.0.0.1:5432 works and the `faultline` database
# exists, and that `python3 -m venv` works. Idempotent: whatever already answers is left alone,
# so a second run takes well under two seconds. apt does not start services on these machines,
# so they are started by hand.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"

PG_ADMIN_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
APP_DB="faultline"
START_TIMEOUT="${SERVICES_START_TIMEOUT:-60}" # seconds each service gets to come up

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    log "not root and no sudo: installing or starting services may fail"
  fi
fi
as_root() { "${SUDO[@]}" "$@"; }

# True when something accepts TCP connections on 127.0.0.1:$1.
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Polls "$@" until it succeeds or START_TIMEOUT passes.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${START_TIMEOUT}s"
    sleep 0.5
  done
}

APT_UPDATED=0
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# Installs the packages that are missing; `apt-get update` only the first time one is.
apt_install() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Runs a command as the `postgres` OS user (for peer auth over the local socket).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u postgres -- "$@")
    else
      (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
  elif [ "${#SUDO[@]}" -gt 0 ]; then
    (cd / && sudo -u postgres "$@")
  else
    return 1
  fi
}

# --- PostgreSQL ---------------------------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
pg_login() { psql "$PG_ADMIN_URL" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    if tcp_open 5432; then apt_install postgresql-client; else apt_install postgresql; fi
  fi
  if pg_up; then
    log "postgres: running"
  else
    if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
      apt_install postgresql
      if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
        local v
        v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)
        log "postgres: creating cluster $v/main"
        as_root pg_createcluster "$v" main >/dev/null
      fi
    fi
    local ver
    ver=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)
    log "postgres: starting cluster $ver/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_for "postgres" pg_up
    log "postgres: started"
  fi

  if ! pg_login; then
    log "postgres: setting the postgres user's password through the local socket"
    as_postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null ||
      die "could not set the postgres password (need root or sudo)"
    pg_login || die "cannot log in with $PG_ADMIN_URL (check pg_hba.conf)"
  fi

  if [ "$(psql "$PG_ADMIN_URL" -Atqc "select 1 from pg_database where datname = '$APP_DB'")" != 1 ]; then
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $APP_DB" >/dev/null
    log "postgres: created database $APP_DB"
  fi
}

# --- Redis --------------------------------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
  if ! command -v redis-cli >/dev/null 2>&1; then
    if tcp_open 6379; then apt_install redis-tools; else apt_install redis-server; fi
  fi
  if redis_up; then
    log "redis: running"
    return
  fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "redis: starting"
  (cd /tmp && redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save "" --appendonly no >/dev/null)
  wait_for "redis" redis_up
  log "redis: started"
}

# --- RabbitMQ -----------------------------------------------------------------------------------
# rabbitmqctl and rabbitmq-diagnostics need the node's Erlang cookie, hence root.
rabbit_ping() { as_root rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

ensure_rabbitmq() {
  if tcp_open 5672; then
    if ! command -v rabbitmq-diagnostics >/dev/null 2>&1; then
      log "rabbitmq: something answers on 5672 (not a local install); using it"
      return
    fi
    if rabbit_ping; then
      log "rabbitmq: running"
      return
    fi
  fi
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  if ! rabbit_ping; then
    log "rabbitmq: starting"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  # await_startup fails at once until the node runs, so loop on it.
  wait_for "rabbitmq" as_root rabbitmqctl -q await_startup
  wait_for "rabbitmq (port 5672)" tcp_open 5672
  log "rabbitmq: started"
}

# --- Server binaries for the fault tests ---------------------------------------------------------
# The fault tests start servers of their own (shared/src/testkit/instances.rs) and stop them, so
# the server binaries must be here even when the shared services answer from elsewhere (then the
# steps above install only the clients). They also signal process groups with `kill` (procps) and
# mount a tmpfs (`mount`, util-linux). A missing binary makes those tests fail, not skip.
pg_server_installed() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

ensure_test_binaries() {
  local want=()
  pg_server_installed || want+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || want+=(rabbitmq-server)
  command -v kill >/dev/null 2>&1 || want+=(procps)
  command -v mount >/dev/null 2>&1 || want+=(mount)
  if [ "${#want[@]}" -gt 0 ]; then
    log "fault tests: installing ${want[*]}"
    apt_install "${want[@]}"
  fi
}

# --- Python venv (for later test tools) -------------------------------------------------------------
ensure_python_venv() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    return
  fi
  apt_install python3 python3-venv
}

main() {
  ensure_postgres
  ensure_redis
  ensure_rabbitmq
  ensure_test_binaries
  ensure_python_venv
  log "all services ready"
}

# Sourcing the file (for a test of one function) defines the functions without running them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
