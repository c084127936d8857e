#!/usr/bin/env bash
# Starts a local nisshi broker in the background for the demo or for manual
# work: `deploy/local/broker.sh start [PORT]` / `deploy/local/broker.sh stop`.
# Memory storage: nothing survives a restart. State lives in .sluice/broker/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/.sluice/broker"
cmd="${1:-start}"
port="${2:-9092}"

case "$cmd" in
  start)
    nisshi="$("$root/deploy/local/setup.sh" | tail -n 1)"
    mkdir -p "$dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "broker already running (pid $(cat "$dir/pid"))" >&2
      exit 0
    fi
    # nisshi reads a .env in its working directory: give it one of its own.
    # Every descriptor is redirected, so the caller's pipes do not stay open.
    cd "$dir"
    nohup "$nisshi" broker \
      --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://nisshi/ --group-initial-rebalance-delay 0s </dev/null >broker.log 2>&1 &
    echo $! >pid
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "broker listening on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/broker.log)" >&2
        exit 0
      fi
      sleep 0.1
    done
    echo "the broker did not start; see $dir/broker.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      kill "$(cat "$dir/pid")" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
  *)
    echo "usage: $0 start [PORT] | stop" >&2
    exit 2
    ;;
esac
