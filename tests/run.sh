#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs prerequisites (cached), then
# formatting, lints, and every unit, doc and integration test. Integration
# tests start their own nisshi broker on a free loopback port.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export SLUICE_NISSHI="$(deploy/local/setup.sh | tail -n 1)"
export SLUICE_PYTHON="${SLUICE_CACHE:-$HOME/.cache/sluice}/pyarrow-venv/bin/python"

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
