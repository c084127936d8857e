#!/usr/bin/env bash
# Starts a local PostgreSQL 15 server in the background for the demo or for
# manual work: `deploy/local/postgres.sh start [PORT]` / `... stop`. The
# cluster (user `sluice`, no password, loopback only) lives in
# .sluice/postgres/ and is made on first start; setup.sh installs PostgreSQL.
# As root, the server runs as the `postgres` user (PostgreSQL refuses root).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/.sluice/postgres"
bin="${SLUICE_PG_BIN:-/usr/lib/postgresql/15/bin}"
cmd="${1:-start}"
port="${2:-5432}"

as_server() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    "$root/deploy/local/setup.sh" >/dev/null
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_server "$bin/initdb" -D "$dir/data" -U sluice --auth=trust -E UTF8 >/dev/null
    fi
    if as_server "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      echo "PostgreSQL already running ($dir)" >&2
      exit 0
    fi
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    echo "PostgreSQL listening on 127.0.0.1:$port (user sluice, log $dir/postgres.log)" >&2
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_server "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: $0 start [PORT] | stop" >&2
    exit 2
    ;;
esac
