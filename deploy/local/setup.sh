#!/usr/bin/env bash
# Installs what Sluice's demo and tests need, idempotently; a second run takes
# a second. Everything is cached outside the repository:
#   - the wasm32-wasip2 Rust target (rustup);
#   - the test broker, nisshi 0.8.1 from crates.io, built once with the nightly
#     toolchain it requires (rustc >= 1.96; ~11 minutes on 2 cores), cached in
#     $SLUICE_CACHE (default ~/.cache/sluice);
#   - a Python virtualenv with pyarrow (PyPI), the standard Parquet reader the
#     tests check Sluice's Parquet files with, in $SLUICE_CACHE/pyarrow-venv;
#   - Debian's chromium and chromium-driver packages (/usr/bin/chromium,
#     /usr/bin/chromedriver), the headless browser the dashboard test drives,
#     installed with apt-get (through sudo when not root) if either is missing.
# Prints the broker binary's path on its last line.
set -euo pipefail

NISSHI_VERSION=0.8.1
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
nisshi="$cache/nisshi-$NISSHI_VERSION/bin/nisshi"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  log "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2 >&2
fi

PYARROW_VERSION=22.0.0
venv="$cache/pyarrow-venv"
if ! "$venv/bin/python" -c "import pyarrow, sys; sys.exit(pyarrow.__version__ != '$PYARROW_VERSION')" 2>/dev/null; then
  log "installing pyarrow $PYARROW_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pyarrow==$PYARROW_VERSION" >&2
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  log "installing Debian's chromium and chromium-driver (the dashboard test's browser)"
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  if [ "$(id -u)" -ne 0 ]; then
    apt=(sudo "${apt[@]}")
  fi
  if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends chromium chromium-driver; } >&2 \
    || [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    log "error: cannot install /usr/bin/chromium and /usr/bin/chromedriver; on Debian, as root, run:"
    log "  apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"
    exit 1
  fi
fi

if [ ! -x "$nisshi" ]; then
  if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain (nisshi needs rustc >= 1.96)"
    rustup toolchain install nightly --profile minimal >&2
  fi
  log "building the test broker nisshi $NISSHI_VERSION (once; ~11 minutes on 2 cores)"
  mkdir -p "$cache"
  # Build into a temporary root and move it in place, so an interrupted build
  # never leaves a half-installed binary behind.
  tmp="$(mktemp -d "$cache/nisshi-build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  CARGO_TARGET_DIR="$tmp/target" cargo +nightly install nisshi --version "$NISSHI_VERSION" --locked \
    --root "$tmp/root" >&2
  mkdir -p "$(dirname "$nisshi")"
  mv "$tmp/root/bin/nisshi" "$nisshi"
fi
echo "$nisshi"
