#!/usr/bin/env bash
# Installs what Sluice's demo and tests need, idempotently; a second run takes
# a second. Everything is cached outside the repository:
#   - the wasm32-wasip2 Rust target (rustup);
#   - the test broker, nisshi 0.8.1 from crates.io, built once with the nightly
#     toolchain it requires (rustc >= 1.96; ~11 minutes on 2 cores), cached in
#     $SLUICE_CACHE (default ~/.cache/sluice);
#   - the S3-compatible test server, s3s-fs 0.17.0 from crates.io (feature
#     `binary`), built the same way with nightly (rustc >= 1.96; ~2 minutes
#     on 2 cores), at $SLUICE_CACHE/s3s-fs-0.17.0/bin/s3s-fs: callers compute
#     that path themselves (deploy/local/s3.sh starts it);
#   - a Python virtualenv in $SLUICE_CACHE/pyarrow-venv with, from PyPI,
#     pyarrow, the standard Parquet reader the tests check Sluice's Parquet
#     files with, kubernetes-validate, Kubernetes' JSON schemas (bundled,
#     used offline) that deploy/k8s/validate.sh checks the manifests against,
#     jsonschema, with which deploy/compose/validate.sh checks the Compose
#     file against the Compose Specification's schema (vendored there), and
#     deltalake (delta-rs's Python package), the independent reader the tests
#     check Sluice's Delta tables with;
#   - Debian's chromium and chromium-driver packages (/usr/bin/chromium,
#     /usr/bin/chromedriver), the headless browser the dashboard test drives,
#     installed with apt-get (through sudo when not root) if either is missing;
#   - Debian's postgresql-15 package (/usr/lib/postgresql/15/bin), whose
#     initdb, postgres and psql the PostgreSQL output's tests and the demo run
#     a server of their own with, installed the same way if missing.
# Prints the broker binary's path on its last line.
set -euo pipefail

NISSHI_VERSION=0.8.1
S3S_FS_VERSION=0.17.0
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
nisshi="$cache/nisshi-$NISSHI_VERSION/bin/nisshi"
s3s_fs="$cache/s3s-fs-$S3S_FS_VERSION/bin/s3s-fs"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Every temporary build root made below, removed on exit however the script ends.
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT

# install_crate CRATE VERSION DEST [CARGO INSTALL ARGS...]: builds CRATE's binary
# with nightly (both crates need rustc >= 1.96) into a temporary root and moves it
# to DEST, so an interrupted build never leaves a half-installed binary behind.
install_crate() {
  local crate="$1" version="$2" dest="$3" tmp
  shift 3
  if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain ($crate needs rustc >= 1.96)"
    rustup toolchain install nightly --profile minimal >&2
  fi
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/$crate-build.XXXXXX")"
  tmps+=("$tmp")
  CARGO_TARGET_DIR="$tmp/target" cargo +nightly install "$crate" --version "$version" --locked \
    --root "$tmp/root" "$@" >&2
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/root/bin/$crate" "$dest"
  rm -rf "$tmp"
}

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  log "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2 >&2
fi

PYARROW_VERSION=22.0.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# Also a dependency of kubernetes-validate; pinned for the Compose check.
JSONSCHEMA_VERSION=4.26.0
DELTALAKE_VERSION=1.6.6
venv="$cache/pyarrow-venv"
# The packages importable (kubernetes_validate.utils pulls in PyYAML) and at
# the pinned versions; else the venv is made again.
venv_check='
import sys
from importlib.metadata import version
import pyarrow
import jsonschema
import kubernetes_validate.utils
import deltalake
from kubernetes_validate.version import __version__ as kv
sys.exit((pyarrow.__version__, kv, version("jsonschema"), deltalake.__version__) != tuple(sys.argv[1:]))
'
if ! "$venv/bin/python" -c "$venv_check" "$PYARROW_VERSION" "$KUBERNETES_VALIDATE_VERSION" \
  "$JSONSCHEMA_VERSION" "$DELTALAKE_VERSION" 2>/dev/null; then
  log "installing pyarrow $PYARROW_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION," \
    "jsonschema $JSONSCHEMA_VERSION and deltalake $DELTALAKE_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pyarrow==$PYARROW_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "jsonschema==$JSONSCHEMA_VERSION" "deltalake==$DELTALAKE_VERSION" >&2
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
if [ "$(id -u)" -ne 0 ]; then
  apt=(sudo "${apt[@]}")
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  log "installing Debian's chromium and chromium-driver (the dashboard test's browser)"
  if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends chromium chromium-driver; } >&2 \
    || [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    log "error: cannot install /usr/bin/chromium and /usr/bin/chromedriver; on Debian, as root, run:"
    log "  apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"
    exit 1
  fi
fi

pg_bin=/usr/lib/postgresql/15/bin
if [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/psql" ]; then
  log "installing Debian's postgresql-15 (the PostgreSQL output's test server)"
  if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends postgresql-15 postgresql-client-15; } >&2 \
    || [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/psql" ]; then
    log "error: cannot install PostgreSQL 15; on Debian, as root, run:"
    log "  apt-get update && apt-get install -y --no-install-recommends postgresql-15"
    exit 1
  fi
fi

if [ ! -x "$nisshi" ]; then
  log "building the test broker nisshi $NISSHI_VERSION (once; ~11 minutes on 2 cores)"
  install_crate nisshi "$NISSHI_VERSION" "$nisshi"
fi

if [ ! -x "$s3s_fs" ]; then
  log "building the S3 test server s3s-fs $S3S_FS_VERSION (once; ~2 minutes on 2 cores)"
  install_crate s3s-fs "$S3S_FS_VERSION" "$s3s_fs" --features binary
fi

# The last line is the broker's path (tests/run.sh and broker.sh read it with
# `tail -n 1`); s3s-fs's path is the fixed one above, printed nowhere.
echo "$nisshi"
