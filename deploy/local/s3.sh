#!/usr/bin/env bash
# Starts a local S3-compatible server (s3s-fs, installed by setup.sh) in the
# background for the demo, the tests or manual work:
#   deploy/local/s3.sh start [PORT]   (default 9000; prints the client's env)
#   deploy/local/s3.sh status         (prints the client's env when running)
#   deploy/local/s3.sh stop
# `eval "$(deploy/local/s3.sh start)"` sets AWS_ENDPOINT_URL, the fixed test
# credentials, AWS_REGION, AWS_ALLOW_HTTP and SLUICE_S3_BUCKET.
# Objects are files under .sluice/s3/data/, a bucket is a directory there
# (start creates the bucket `sluice`; CreateBucket works too), and both survive
# a restart: stop, then remove the directory for a clean slate.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/.sluice/s3"
data="$dir/data"
cmd="${1:-start}"
port="${2:-9000}"

ACCESS_KEY=sluice
SECRET_KEY=sluice-secret
BUCKET=sluice

running() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$dir/port")
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export SLUICE_S3_BUCKET=$BUCKET
EOF
}

case "$cmd" in
  start)
    "$root/deploy/local/setup.sh" >/dev/null
    # setup.sh prints only the broker's path; s3s-fs lies at a fixed place.
    version="$(sed -n 's/^S3S_FS_VERSION=//p' "$root/deploy/local/setup.sh")"
    s3s_fs="${SLUICE_CACHE:-$HOME/.cache/sluice}/s3s-fs-$version/bin/s3s-fs"
    mkdir -p "$data/$BUCKET"
    if running; then
      echo "s3s-fs already running (pid $(cat "$dir/pid"))" >&2
      print_env
      exit 0
    fi
    echo "$port" >"$dir/port"
    # Every descriptor is redirected, so the caller's pipes do not stay open.
    # RUST_LOG=info makes it log the "server is running" line waited for below.
    RUST_LOG="${RUST_LOG:-info}" nohup "$s3s_fs" --host 127.0.0.1 --port "$port" \
      --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$data" </dev/null >"$dir/s3.log" 2>&1 &
    echo $! >"$dir/pid"
    # Wait for its own announcement rather than for the port, which another
    # process may hold (then s3s-fs exits with "Address already in use").
    for _ in $(seq 1 100); do
      if ! running; then
        break
      fi
      if grep -q "server is running at http://127.0.0.1:$port" "$dir/s3.log"; then
        echo "s3s-fs listening on 127.0.0.1:$port (pid $(cat "$dir/pid"), data $data, log $dir/s3.log)" >&2
        print_env
        exit 0
      fi
      sleep 0.1
    done
    echo "s3s-fs did not start; see $dir/s3.log" >&2
    exit 1
    ;;
  status)
    if running; then
      echo "s3s-fs running on 127.0.0.1:$(cat "$dir/port") (pid $(cat "$dir/pid"), data $data)" >&2
      print_env
    else
      echo "s3s-fs not running" >&2
      exit 1
    fi
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      kill "$(cat "$dir/pid")" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
  *)
    echo "usage: $0 start [PORT] | status | stop" >&2
    exit 2
    ;;
esac
