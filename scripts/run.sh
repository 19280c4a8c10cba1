#!/usr/bin/env bash
# `make run`: fake providers (so no API key is needed), the control plane and
# Envoy, in the foreground. Ctrl-C stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-examples/quickstart.yaml}
SAR=${SAR_BIN:-target/release/smart-router}
WASM=${SAR_WASM:-target/wasm32-wasip1/release/router_filter.wasm}
DYNMOD=${SAR_DYNMOD:-target/release/libsmart_router.so}
# FILTER=dynamic-module: the native Envoy dynamic module instead of the wasm filter.
case "${FILTER:-wasm}" in
  wasm) FILTER_ARGS=(--wasm "$WASM") ;;
  dynamic-module) FILTER_ARGS=(--dynamic-module "$DYNMOD") ;;
  *) echo "FILTER must be wasm or dynamic-module" >&2; exit 2 ;;
esac
ENVOY_CMD=${ENVOY:-.venv/bin/envoy}
mkdir -p build
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if [ "$CONFIG" = examples/quickstart.yaml ]; then
  # The quickstart's channels are two local fake providers.
  python3 tests/fake_provider.py --port 7611 --name fake-free \
    --models 'gpt-4o-mini,qwen/qwen3-30b-a3b:free,llama-3.1-8b-instant' --key fake-key-free >/dev/null &
  pids+=($!)
  python3 tests/fake_provider.py --port 7612 --name fake-paid \
    --models 'gpt-4o-mini,gpt-4o,claude-3-haiku-20240307,ep-20250203083646-2szv9' --key fake-key-paid >/dev/null &
  pids+=($!)
  sleep 0.5
fi

"$SAR" render-envoy --config "$CONFIG" "${FILTER_ARGS[@]}" --out build/envoy.yaml
"$SAR" serve --config "$CONFIG" &
pids+=($!)
sleep 1
"$ENVOY_CMD" -c build/envoy.yaml --base-id 7601 -l warning --component-log-level wasm:info,dynamic_modules:info &
pids+=($!)
echo "smart-router: API http://127.0.0.1:7601  admin http://127.0.0.1:9901  (Ctrl-C stops)" >&2
wait -n "${pids[@]}"
