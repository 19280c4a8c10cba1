//! `smart-router render-envoy`: the Envoy bootstrap for a config.
//!
//! Envoy executes the plan the filter makes: one cluster per channel, a route whose
//! `priority_group` cluster specifier takes the attempt order from metadata, and a
//! retry policy that moves to the next group on 5xx, reset, connect failure, 401,
//! 403, 408 and 429. The filter chain is:
//!
//! 1. wasm `router` role: answers listings and errors, sets the plan header;
//! 2. `header_to_metadata`: plan header -> `smart_router.priority_groups` metadata;
//! 3. wasm `clear_route` role (Envoy's `clear_route_cache` foreign function): the
//!    route was resolved before the metadata existed, so it must be resolved again
//!    for the first attempt to follow the plan;
//! 4. router, with the wasm `attempt` role as an upstream filter (per attempt).
//!
//! With `--dynamic-module` the same decisions are made by a native Envoy dynamic
//! module (`dynmod/`): the chain is the module's `router` role, then the router
//! with its `attempt` role upstream. The module writes the plan into metadata
//! itself and picks each attempt's cluster as the route's cluster specifier
//! (`envoy.router.cluster_specifier_plugin.dynamic_modules`), so neither
//! `header_to_metadata`, the clear step nor `priority_group` is needed. It fetches
//! the table over its own connection to the control plane, so the bootstrap has no
//! wasm service either.

use serde_json::{json, Value};

use crate::config::{parse_base_url, Config};
use crate::table::cluster_name;
use router_core::roles::config::{
    AttemptConfig, ClearRouteConfig, ControlPlaneLink, FilterConfig, RouterConfig, ServiceConfig, METADATA_NAMESPACE,
    PLAN_HEADER, PRIORITY_GROUPS_KEY,
};
use router_core::wire::RETRIES_OVERRIDE_PREFIX;

pub const CONTROL_PLANE_CLUSTER: &str = "smart_router_control_plane";
/// Target of the route when no plan was set (never reached by chat requests, which
/// always carry a plan): a cluster with no endpoints, so Envoy answers 503.
pub const NO_CHANNEL_CLUSTER: &str = "smart_router_no_channel";
pub const VM_ID: &str = "smart_router";

pub struct RenderOptions {
    pub wasm_path: String,
    /// Use the native dynamic module at this path instead of the wasm filter.
    pub dynamic_module_path: Option<String>,
    pub table_token: String,
}

fn socket(addr: &str) -> Result<Value, String> {
    let sa: std::net::SocketAddr = addr.parse().map_err(|_| format!("\"{addr}\" is not host:port"))?;
    Ok(json!({"socket_address": {"address": sa.ip().to_string(), "port_value": sa.port()}}))
}

fn vm_config(wasm_path: &str) -> Value {
    json!({
        "vm_id": VM_ID,
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": wasm_path}},
    })
}

fn plugin_configuration(value: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value})
}

fn wasm_filter(name: &str, wasm_path: &str, configuration: &FilterConfig) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": vm_config(wasm_path),
                "configuration": plugin_configuration(&configuration.to_json()),
                // A VM panic: ~1 s of 503s, then Envoy reloads the VM.
                "failure_policy": "FAIL_RELOAD",
                // Lets the filter pause in the headers callback and read the body.
                "allow_on_headers_stop_iteration": true,
            }
        }
    })
}

fn dynamic_module_filter(name: &str, module_path: &str, configuration: &FilterConfig) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "module": {"local": {"filename": module_path}},
                // The module's background thread and statics live as long as Envoy.
                "do_not_close": true,
            },
            "filter_name": name,
            "filter_config": plugin_configuration(&configuration.to_json()),
        }
    })
}

/// Picks each attempt's cluster from the plan in `smart_router` metadata (the same
/// list for every retry, `refresh_cluster_on_retry` moves along it). Before a
/// plan exists the route points at [`NO_CHANNEL_CLUSTER`].
///
/// Past the end of a plan the specifier repeats its last cluster, so Envoy must
/// make no more retries than the plan has attempts after the first. The wasm
/// filter says so with `x-envoy-max-retries`; the module's specifier instead picks
/// one of the route-action overrides `retries_0`..`retries_<max>` declared here
/// (the same retry policy with that `num_retries`), which costs Envoy less than
/// parsing a header on every request.
fn cluster_specifier(config: &Config, opts: &RenderOptions) -> Value {
    match &opts.dynamic_module_path {
        Some(module) => {
            let overrides: serde_json::Map<String, Value> = (0..=config.routing.max_retry_attempts)
                .map(|n| (format!("{RETRIES_OVERRIDE_PREFIX}{n}"), json!({"retry_policy": retry_policy(config, n)})))
                .collect();
            json!({
                "name": "envoy.router.cluster_specifier_plugin.dynamic_modules",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.dynamic_modules.v3.DynamicModuleClusterSpecifier",
                    "dynamic_module_config": {"module": {"local": {"filename": module}}, "do_not_close": true},
                    "specifier_name": "smart_router",
                    "specifier_config": plugin_configuration(&json!({"no_channel_cluster": NO_CHANNEL_CLUSTER}).to_string()),
                    "route_action_overrides": overrides,
                },
            })
        }
        None => json!({
            "name": "envoy.router.cluster_specifier_plugin.priority_group",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier",
                "override_metadata_namespace": METADATA_NAMESPACE,
                "priority_groups": [{"name": "none", "clusters": [{"cluster_name": NO_CHANNEL_CLUSTER, "weight": 1}]}],
            },
        }),
    }
}

fn retry_policy(config: &Config, num_retries: u32) -> Value {
    // Until the response starts (Envoy stops this timer at the first response
    // headers, so long streams are not cut).
    let per_try_timeout = format!("{}s", config.routing.first_byte_timeout);
    if num_retries == 0 {
        // A one-attempt plan has nowhere to fail over to. Without `retry_on` Envoy
        // builds no retry state for the request (its back-off, retry buffering and
        // bookkeeping cost about a twentieth of a request's CPU); the per-try timer
        // still bounds the wait for the first byte.
        return json!({ "per_try_timeout": per_try_timeout });
    }
    json!({
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": router_core::flow::FAILOVER_STATUSES,
        "num_retries": num_retries,
        // Each retry goes to the next channel: re-run the cluster specifier.
        "refresh_cluster_on_retry": true,
        // The next attempt is another provider; waiting buys nothing.
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"},
        "per_try_timeout": per_try_timeout,
    })
}

fn thresholds() -> Value {
    // Envoy's default allows 3 concurrent retries per cluster; failover under load
    // needs many more.
    json!({"thresholds": [{
        "max_connections": 100000, "max_pending_requests": 100000,
        "max_requests": 100000, "max_retries": 100000
    }]})
}

/// The Envoy bootstrap as YAML.
pub fn render(config: &Config, opts: &RenderOptions) -> Result<String, String> {
    let bootstrap = bootstrap(config, opts)?;
    let yaml = serde_yaml::to_string(&bootstrap).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Generated by `smart-router render-envoy`; re-render after adding or removing channels.\n\
         # Listener {}, admin {}, control plane {}.\n{yaml}",
        config.server.listen, config.server.admin, config.control_plane.listen
    ))
}

pub fn bootstrap(config: &Config, opts: &RenderOptions) -> Result<Value, String> {
    let channels: Vec<_> = config.channels.iter().filter(|c| c.enabled).collect();
    let mut clusters = vec![
        json!({
            "name": CONTROL_PLANE_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": {"cluster_name": CONTROL_PLANE_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": socket(&config.control_plane.listen)?}}
            ]}]},
        }),
        json!({
            "name": NO_CHANNEL_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": NO_CHANNEL_CLUSTER, "endpoints": []},
        }),
    ];
    let mut cluster_names = Vec::new();
    for ch in &channels {
        let up = parse_base_url(&ch.base_url).map_err(|e| format!("channel {}: {e}", ch.id))?;
        let name = cluster_name(&ch.id);
        let is_ip = up.host.parse::<std::net::IpAddr>().is_ok();
        let mut cluster = json!({
            "name": name,
            "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
            "dns_lookup_family": "V4_PREFERRED",
            "connect_timeout": format!("{}s", config.server.connect_timeout),
            "circuit_breakers": thresholds(),
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": up.host, "port_value": up.port}}}}
            ]}]},
        });
        if up.tls {
            // The certificate must be signed by a trusted CA *and* name the
            // channel's host: without the name check any certificate a trusted CA
            // signed, for any host, would receive the channel's key.
            let san_type = if is_ip { "IP_ADDRESS" } else { "DNS" };
            cluster["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": up.host,
                    "common_tls_context": {"validation_context": {
                        "trusted_ca": {"filename": config.server.ca_file},
                        "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": up.host}}],
                    }},
                },
            });
        }
        clusters.push(cluster);
        cluster_names.push(name);
    }

    let max_body = config.server.max_body_bytes;
    let router_config = |control_plane: Option<ControlPlaneLink>| {
        FilterConfig::Router(RouterConfig {
            clusters: cluster_names.clone(),
            max_body_bytes: max_body,
            num_retries: Some(config.routing.max_retry_attempts as usize),
            control_plane,
        })
    };
    let too_large = format!("request body is larger than the router's limit of {max_body} bytes");

    let upstream_codec = json!({
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
    });
    let http_filters = match &opts.dynamic_module_path {
        Some(module) => {
            let link = ControlPlaneLink {
                address: config.control_plane.listen.clone(),
                token: opts.table_token.clone(),
                poll_ms: config.control_plane.table_poll_ms,
            };
            json!([
                dynamic_module_filter("smart_router", module, &router_config(Some(link))),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                        "upstream_http_filters": [
                            dynamic_module_filter("smart_router_attempt", module, &FilterConfig::Attempt(AttemptConfig {})),
                            upstream_codec,
                        ],
                    },
                },
            ])
        }
        None => json!([
        wasm_filter("smart_router", &opts.wasm_path, &router_config(None)),
        {
            "name": "envoy.filters.http.header_to_metadata",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
                "request_rules": [{
                    "header": PLAN_HEADER,
                    "on_header_present": {
                        "metadata_namespace": METADATA_NAMESPACE,
                        "key": PRIORITY_GROUPS_KEY,
                        "type": "PROTOBUF_VALUE",
                        "encode": "BASE64",
                    },
                    "remove": true,
                }],
            },
        },
        wasm_filter("smart_router_clear", &opts.wasm_path, &FilterConfig::ClearRoute(ClearRouteConfig {})),
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "upstream_http_filters": [
                    wasm_filter("smart_router_attempt", &opts.wasm_path, &FilterConfig::Attempt(AttemptConfig {})),
                    upstream_codec,
                ],
            },
        },
            ]),
    };

    let mut route = json!({
        "match": {"prefix": "/"},
        // Bodies are buffered whole (the filter reads `model`, retries resend it).
        "request_body_buffer_limit": max_body,
        "route": {
            "inline_cluster_specifier_plugin": {"extension": cluster_specifier(config, opts)},
            // Streams may run for minutes: no overall route timeout.
            "timeout": "0s",
            "retry_policy": retry_policy(config, config.routing.max_retry_attempts),
            // Silence before or between chunks. The stream's own idle timer (which
            // Envoy runs for every stream anyway) rather than a per-try one: a
            // per-try idle timer costs a timer per attempt, and before the first
            // byte `per_try_timeout` (never longer) fires first and fails over.
            "idle_timeout": format!("{}s", config.routing.idle_timeout),
        },
    });
    // A client's own credentials never reach a provider, on any path: Envoy drops
    // them before the first attempt, and each attempt sets only its channel's key.
    route["request_headers_to_remove"] = json!(["authorization", "x-api-key"]);

    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "smart_router",
        "codec_type": "AUTO",
        "route_config": {
            "name": "smart_router",
            "virtual_hosts": [{
                "name": "smart_router",
                "domains": ["*"],
                // The wasm attempt filter reads x-envoy-attempt-count from the request
                // (the module reads Envoy's attempt count instead, so providers do not
                // see the header); the response carries it to the wasm router role.
                "include_request_attempt_count": opts.dynamic_module_path.is_none(),
                "include_attempt_count_in_response": true,
                "routes": [route],
            }],
        },
        "http_filters": http_filters,
        "local_reply_config": {"mappers": [{
            "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 413, "runtime_key": "smart_router.413"}}}},
            "body_format_override": {
                "json_format": {"error": {"message": too_large, "type": "invalid_request_error", "code": "request_too_large"}},
                "content_type": "application/json",
            },
        }]},
    });

    let admin = socket(&config.server.admin)?;
    let listen = socket(&config.server.listen)?;
    let mut bootstrap = json!({
        "node": {"id": "smart-router", "cluster": "smart-router"},
        "admin": {"address": admin},
        "stats_config": {"stats_tags": [
            {"tag_name": "channel", "regex": "^wasmcustom\\.sar\\.channel\\.(channel=([^.]+)\\.)"},
            {"tag_name": "model", "regex": "^wasmcustom\\.sar\\.model\\.(model=([^.]+)\\.)"},
        ]},
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
                "singleton": true,
                "config": {
                    "name": "smart_router_service",
                    "root_id": "smart_router_service",
                    "vm_config": vm_config(&opts.wasm_path),
                    "configuration": plugin_configuration(&FilterConfig::Service(ServiceConfig {
                        control_plane_cluster: CONTROL_PLANE_CLUSTER.into(),
                        control_plane_authority: config.control_plane.listen.clone(),
                        token: opts.table_token.clone(),
                        poll_ms: config.control_plane.table_poll_ms,
                    }).to_json()),
                },
            },
        }],
        "static_resources": {
            "listeners": [{
                "name": "smart_router",
                "address": listen,
                // Whole request bodies are buffered (routing reads `model`; retries
                // resend the body), so the connection buffer must hold the largest.
                "per_connection_buffer_limit_bytes": max_body,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": clusters,
        },
    });
    if opts.dynamic_module_path.is_some() {
        // The module fetches the table itself: no wasm service, no wasm stats tags.
        if let Some(b) = bootstrap.as_object_mut() {
            b.remove("bootstrap_extensions");
            b.remove("stats_config");
            // The module's counters live in Envoy's `dynamicmodulescustom` namespace;
            // this makes Prometheus show them as the wasm filter's are
            // (`sar_channel_attempts{channel="..."}`, no `envoy_` prefix).
            b.insert(
                "layered_runtime".into(),
                json!({"layers": [
                    {"name": "smart_router", "static_layer": {
                        "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix": true,
                    }},
                    // Keeps admin `/runtime_modify` working, as without layered_runtime.
                    {"name": "admin", "admin_layer": {}},
                ]}),
            );
        }
    }
    Ok(bootstrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n    api_key: k\n";
        crate::config::parse(text, "router.yaml", &|_| None).unwrap()
    }

    fn filter_names(b: &Value) -> Vec<String> {
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let mut names: Vec<String> =
            hcm["http_filters"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
        let router = hcm["http_filters"].as_array().unwrap().last().unwrap();
        for f in router["typed_config"]["upstream_http_filters"].as_array().unwrap() {
            names.push(format!("upstream:{}", f["name"].as_str().unwrap()));
        }
        names
    }

    #[test]
    fn https_channels_verify_the_certificate_names_the_host() {
        let text = "channels:\n  - id: a\n    base_url: https://api.example.com/v1\n  - id: b\n    base_url: https://10.0.0.2:8443/v1\n";
        let c = crate::config::parse(text, "router.yaml", &|_| None).unwrap();
        let opts = RenderOptions { wasm_path: "/f.wasm".into(), dynamic_module_path: None, table_token: "t".into() };
        let b = bootstrap(&c, &opts).unwrap();
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let tls = |name: &str| {
            let c = clusters.iter().find(|c| c["name"] == name).unwrap();
            c["transport_socket"]["typed_config"].clone()
        };
        let a = tls("channel_a");
        assert_eq!(a["sni"], "api.example.com");
        let v = &a["common_tls_context"]["validation_context"];
        assert_eq!(v["trusted_ca"]["filename"], "/etc/ssl/certs/ca-certificates.crt");
        assert_eq!(
            v["match_typed_subject_alt_names"],
            json!([{"san_type": "DNS", "matcher": {"exact": "api.example.com"}}])
        );
        let b = tls("channel_b");
        assert_eq!(
            b["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0],
            json!({"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.2"}})
        );
    }

    #[test]
    fn wasm_chain_carries_the_plan_through_header_to_metadata() {
        let opts = RenderOptions { wasm_path: "/f.wasm".into(), dynamic_module_path: None, table_token: "t".into() };
        let b = bootstrap(&config(), &opts).unwrap();
        assert_eq!(
            filter_names(&b),
            [
                "smart_router",
                "envoy.filters.http.header_to_metadata",
                "smart_router_clear",
                "envoy.filters.http.router",
                "upstream:smart_router_attempt",
                "upstream:envoy.filters.http.upstream_codec"
            ]
        );
        assert_eq!(b["bootstrap_extensions"][0]["name"], "envoy.bootstrap.wasm");
    }

    #[test]
    fn dynamic_module_chain_needs_no_metadata_step_nor_wasm_service() {
        let opts = RenderOptions {
            wasm_path: "/f.wasm".into(),
            dynamic_module_path: Some("/lib.so".into()),
            table_token: "t".into(),
        };
        let b = bootstrap(&config(), &opts).unwrap();
        assert_eq!(
            filter_names(&b),
            [
                "smart_router",
                "envoy.filters.http.router",
                "upstream:smart_router_attempt",
                "upstream:envoy.filters.http.upstream_codec"
            ]
        );
        assert!(b.get("bootstrap_extensions").is_none());
        assert_eq!(
            b["layered_runtime"]["layers"][0]["static_layer"]
                ["envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix"],
            true
        );
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let cfg: Value =
            serde_json::from_str(hcm["http_filters"][0]["typed_config"]["filter_config"]["value"].as_str().unwrap())
                .unwrap();
        assert_eq!(cfg["role"], "router");
        assert_eq!(cfg["control_plane"]["address"], "127.0.0.1:7602");
        assert_eq!(cfg["control_plane"]["token"], "t");
        assert_eq!(
            hcm["http_filters"][0]["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"],
            "/lib.so"
        );
        let specifier = &hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
            ["inline_cluster_specifier_plugin"]["extension"];
        assert_eq!(specifier["name"], "envoy.router.cluster_specifier_plugin.dynamic_modules");
        assert_eq!(specifier["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"], "/lib.so");
        let cfg: Value =
            serde_json::from_str(specifier["typed_config"]["specifier_config"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(cfg["no_channel_cluster"], NO_CHANNEL_CLUSTER);
        let overrides = specifier["typed_config"]["route_action_overrides"].as_object().unwrap();
        assert_eq!(overrides.len(), 4, "retries_0..retries_3 for max_retry_attempts 3");
        // One attempt: no retry state, only the first-byte timer.
        assert_eq!(overrides["retries_0"]["retry_policy"], json!({"per_try_timeout": "120s"}));
        assert_eq!(overrides["retries_1"]["retry_policy"]["num_retries"], 1);
        assert_eq!(overrides["retries_3"]["retry_policy"]["refresh_cluster_on_retry"], true);
        assert_eq!(hcm["route_config"]["virtual_hosts"][0]["include_request_attempt_count"], false);
    }
}
