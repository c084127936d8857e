#!/usr/bin/env bash
# The Sluice demo, from a fresh clone: installs what it needs, starts a local
# broker, builds the example guests and the host, produces a sample event
# stream, runs the example pipeline (deploy/demo/pipeline.yaml) until it has
# caught up, and shows what came out and what was dead-lettered.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "Installing prerequisites (cached after the first run)"
deploy/local/setup.sh >/dev/null

# The broker starts empty, so checkpoints and files of an earlier demo go too.
rm -rf .sluice/demo

step "Starting a local Kafka-protocol broker (nisshi) on 127.0.0.1:9092, and PostgreSQL on 127.0.0.1:5432"
deploy/local/broker.sh start 9092
trap 'deploy/local/broker.sh stop; deploy/local/postgres.sh stop' EXIT
deploy/local/postgres.sh start 5432
psql=(/usr/lib/postgresql/15/bin/psql -X -h 127.0.0.1 -p 5432 -U sluice -d postgres)
"${psql[@]}" -qc 'DROP TABLE IF EXISTS events_per_minute, sluice_progress, sluice_rejected'

step "Building the example guests (wasm32-wasip2 components) and the host"
cargo build --locked --profile guest --target wasm32-wasip2 \
  -p filter-heartbeats -p strategy-map -p alert-router -p event-window-agg -p strategy-join
cargo build --locked -p sluice
sluice=target/debug/sluice
ls -l target/wasm32-wasip2/guest/*.wasm

step "Creating topics and producing 5,000 sample events (every 97th is malformed JSON)"
$sluice create-topics --partitions 4 events events-clean alerts events-dlq events-per-minute
$sluice sample --topic events --count 5000 --malformed-every 97
$sluice tail --max 3 events

step "Validating and running the pipeline: filter-heartbeats -> alert-router"
$sluice validate deploy/demo/pipeline.yaml
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/pipeline.yaml | tee .sluice/demo-summary.json

count() { $sluice tail "$1" | wc -l; }
step "What came out"
printf '  %-14s %6s records\n' events "$(count events)" events-clean "$(count events-clean)" \
  alerts "$(count alerts)" events-dlq "$(count events-dlq)"
echo "  (heartbeats are dropped by design; the summary above counts them)"
step "First records of each output"
for t in events-clean alerts; do echo "--- $t"; $sluice tail --max 2 "$t"; done
echo "--- events-dlq (original bytes plus sluice.* headers saying why and where)"
$sluice tail --max 2 events-dlq

step "A windowed aggregate over the same events: per minute and event_type (deploy/demo/windows.yaml)"
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/windows.yaml >/dev/null
echo "  $(count events-per-minute) window results; the first ones:"
$sluice tail --max 4 events-per-minute
echo "  ... and as Parquet files (exactly-once: staged, then published at each checkpoint):"
find .sluice/demo/parquet -name '*.parquet' | sort | head -5
py="${SLUICE_CACHE:-$HOME/.cache/sluice}/pyarrow-venv/bin/python"
"$py" - .sluice/demo/parquet/events-per-minute <<'PY'
import sys, pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet").to_table()
print(f"  pyarrow reads {table.num_rows} rows; columns: {', '.join(table.column_names)}")
for row in table.slice(0, 3).to_pylist():
    print("  ", row)
PY

step "The same windows kept up to date in a PostgreSQL table: update mode, upserted (deploy/demo/windows-postgres.yaml)"
$sluice validate deploy/demo/windows-postgres.yaml
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/windows-postgres.yaml >/dev/null
"${psql[@]}" -c 'SELECT window_start, event_type, count, sum_amount, unique_users FROM events_per_minute
  ORDER BY window_start, event_type LIMIT 6'
"${psql[@]}" -Atc 'SELECT count(*) || '"' rows, one per window and event type'"' FROM events_per_minute'

step "The same windows as a Delta Lake table: update mode, merged at each checkpoint (deploy/demo/windows-delta.yaml)"
$sluice validate deploy/demo/windows-delta.yaml
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/windows-delta.yaml >/dev/null
"$py" - .sluice/demo/lake/events_per_minute <<'PY'
import os, sys
from deltalake import DeltaTable
table = DeltaTable(sys.argv[1])
rows = table.to_pyarrow_table().sort_by([("window_start", "ascending"), ("event_type", "ascending")])
print(f"  deltalake reads version {table.version()}: {rows.num_rows} rows, one per window and event type")
for row in rows.slice(0, 4).to_pylist():
    print("  ", {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()})
sys.stdout.flush()
os._exit(0)  # deltalake's thread pool can abort the interpreter's shutdown
PY

step "The tutorial's strategies A-D through strategy-map, then C's output joined with D's input"
$sluice create-topics --partitions 4 a-input b-input c-input d-input strategies-output c-output \
  d-input-ready strategies-dlq
for s in A B C D; do
  # Sensors sensor-0..19, a reading every 10 s each; D's 2 minutes after C's.
  offset=0; [ "$s" = D ] && offset=120
  $sluice sample --topic "$(echo "$s" | tr A-D a-d)-input" --readings "$s" --count 400 --users 20 \
    --offset-s "$offset"
done
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/strategies.yaml >/dev/null
echo "  $(count strategies-output) readings rescaled (deploy/demo/strategies.yaml)"
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/strategy-c.yaml >/dev/null
$sluice validate deploy/demo/strategy-join.yaml
RUST_LOG=warn $sluice run --until-caught-up deploy/demo/strategy-join.yaml >/dev/null
echo "  C_output + D_input -> D_input_ready within 5 minutes per sensor (deploy/demo/strategy-join.yaml):"
echo "  $(count d-input-ready) joined records; the first ones:"
$sluice tail --max 3 d-input-ready
