#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs prerequisites (cached), then
# formatting, lints, and every unit, doc and integration test. Integration
# tests start their own nisshi broker on a free loopback port.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export SLUICE_NISSHI="$(deploy/local/setup.sh | tail -n 1)"
export SLUICE_PYTHON="${SLUICE_CACHE:-$HOME/.cache/sluice}/pyarrow-venv/bin/python"
# The S3-compatible test server, built by setup.sh at a fixed place.
export SLUICE_S3S_FS="${SLUICE_CACHE:-$HOME/.cache/sluice}/s3s-fs-$(sed -n 's/^S3S_FS_VERSION=//p' deploy/local/setup.sh)/bin/s3s-fs"

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
