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

use std::collections::BTreeMap;

use router_core::roles::config::{
    AttemptConfig, ClearRouteConfig, ControlPlaneLink, FilterConfig, RouterConfig, ServiceConfig, METADATA_NAMESPACE,
    PLAN_HEADER, PRIORITY_GROUPS_KEY,
};
use router_core::wire::RETRIES_OVERRIDE_PREFIX;

use crate::config::{parse_base_url, Config};
use crate::table::cluster_name;

pub mod bootstrap;

use bootstrap::*;

pub const CONTROL_PLANE_CLUSTER: &str = "smart_router_control_plane";
/// Target of the route when no plan was set (never reached by chat requests, which
/// always carry a plan): a cluster with no endpoints, so Envoy answers 503.
pub const NO_CHANNEL_CLUSTER: &str = "smart_router_no_channel";
pub const VM_ID: &str = "smart_router";
/// Where Envoy polls the control plane for the channels' clusters (REST xDS).
pub const CDS_PATH: &str = "/v3/discovery:clusters";
pub const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// How often Envoy asks for clusters. Envoy adds up to as much again as jitter,
/// so every Envoy has asked within twice this after a change.
pub const CDS_REFRESH_MS: u64 = 250;

pub struct RenderOptions {
    pub wasm_path: String,
    /// Use the native dynamic module at this path instead of the wasm filter.
    pub dynamic_module_path: Option<String>,
    pub table_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{key}: \"{value}\" is not host:port")]
    Address { key: &'static str, value: String },
    #[error("channel {channel}: {message}")]
    BaseUrl { channel: String, message: String },
    #[error("cannot write the bootstrap as YAML: {0}")]
    Yaml(String),
}

fn socket(key: &'static str, addr: &str) -> Result<Address, RenderError> {
    let sa: std::net::SocketAddr = addr.parse().map_err(|_| RenderError::Address { key, value: addr.to_string() })?;
    Ok(Address { socket_address: SocketAddress { address: sa.ip().to_string(), port_value: sa.port() } })
}

fn string_value(value: String) -> Box<Typed> {
    Box::new(Typed::StringValue { value })
}

fn local(filename: &str) -> LocalSource {
    LocalSource { local: FileName { filename: filename.to_string() } }
}

fn vm_config(wasm_path: &str) -> VmConfig {
    VmConfig { vm_id: VM_ID.into(), runtime: "envoy.wasm.runtime.v8".into(), code: local(wasm_path) }
}

fn wasm_filter(name: &str, wasm_path: &str, configuration: &FilterConfig) -> Extension {
    Extension {
        name: name.into(),
        typed_config: Typed::Wasm {
            config: PluginConfig {
                name: name.into(),
                root_id: name.into(),
                vm_config: vm_config(wasm_path),
                configuration: string_value(configuration.to_json()),
                // A VM panic: ~1 s of 503s, then Envoy reloads the VM.
                failure_policy: Some("FAIL_RELOAD"),
                // Lets the filter pause in the headers callback and read the body.
                allow_on_headers_stop_iteration: Some(true),
            },
        },
    }
}

fn module_config(module_path: &str) -> DynamicModuleConfig {
    // The module's background thread and statics live as long as Envoy.
    DynamicModuleConfig { module: local(module_path), do_not_close: true }
}

fn dynamic_module_filter(name: &str, module_path: &str, configuration: &FilterConfig) -> Extension {
    Extension {
        name: name.into(),
        typed_config: Typed::DynamicModuleFilter {
            dynamic_module_config: module_config(module_path),
            filter_name: name.into(),
            filter_config: string_value(configuration.to_json()),
        },
    }
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
fn cluster_specifier(config: &Config, opts: &RenderOptions) -> Extension {
    match &opts.dynamic_module_path {
        Some(module) => {
            let overrides: BTreeMap<String, RouteActionOverride> = (0..=config.routing.max_retry_attempts)
                .map(|n| {
                    (
                        format!("{RETRIES_OVERRIDE_PREFIX}{n}"),
                        RouteActionOverride { retry_policy: retry_policy(config, n) },
                    )
                })
                .collect();
            let specifier_config = serde_json::json!({"no_channel_cluster": NO_CHANNEL_CLUSTER}).to_string();
            Extension {
                name: "envoy.router.cluster_specifier_plugin.dynamic_modules".into(),
                typed_config: Typed::DynamicModuleClusterSpecifier {
                    dynamic_module_config: module_config(module),
                    specifier_name: "smart_router".into(),
                    specifier_config: string_value(specifier_config),
                    route_action_overrides: overrides,
                },
            }
        }
        None => Extension {
            name: "envoy.router.cluster_specifier_plugin.priority_group".into(),
            typed_config: Typed::PriorityGroupClusterSpecifier {
                override_metadata_namespace: METADATA_NAMESPACE.into(),
                priority_groups: vec![PriorityGroup {
                    name: "none".into(),
                    clusters: vec![WeightedCluster { cluster_name: NO_CHANNEL_CLUSTER.into(), weight: 1 }],
                }],
            },
        },
    }
}

fn seconds(s: f64) -> String {
    format!("{s}s")
}

fn retry_policy(config: &Config, num_retries: u32) -> RetryPolicy {
    // Until the response starts (Envoy stops this timer at the first response
    // headers, so long streams are not cut).
    let per_try_timeout = seconds(config.routing.first_byte_timeout);
    if num_retries == 0 {
        // A one-attempt plan has nowhere to fail over to. Without `retry_on` Envoy
        // builds no retry state for the request (its back-off, retry buffering and
        // bookkeeping cost about a twentieth of a request's CPU); the per-try timer
        // still bounds the wait for the first byte.
        return RetryPolicy { per_try_timeout, ..RetryPolicy::default() };
    }
    RetryPolicy {
        retry_on: Some("5xx,reset,connect-failure,retriable-status-codes".into()),
        retriable_status_codes: router_core::flow::FAILOVER_STATUSES.to_vec(),
        num_retries: Some(num_retries),
        // Each retry goes to the next channel: re-run the cluster specifier.
        refresh_cluster_on_retry: Some(true),
        // The next attempt is another provider; waiting buys nothing.
        retry_back_off: Some(BackOff { base_interval: "0.001s".into(), max_interval: "0.002s".into() }),
        per_try_timeout,
    }
}

fn thresholds() -> CircuitBreakers {
    // Envoy's default allows 3 concurrent retries per cluster; failover under load
    // needs many more.
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: 100_000,
            max_pending_requests: 100_000,
            max_requests: 100_000,
            max_retries: 100_000,
        }],
    }
}

fn static_cluster(name: &str, connect_timeout: &str, address: Option<Address>) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: DiscoveryType::Static,
        dns_lookup_family: None,
        connect_timeout: connect_timeout.into(),
        circuit_breakers: None,
        load_assignment: LoadAssignment {
            cluster_name: name.into(),
            endpoints: address
                .into_iter()
                .map(|a| LocalityEndpoints { lb_endpoints: vec![LbEndpoint { endpoint: Endpoint { address: a } }] })
                .collect(),
        },
        transport_socket: None,
    }
}

/// One channel's cluster: its host (DNS or a fixed address), and TLS that
/// checks the certificate names that host.
fn channel_cluster(config: &Config, id: &str, base_url: &str) -> Result<Cluster, RenderError> {
    let up = parse_base_url(base_url).map_err(|message| RenderError::BaseUrl { channel: id.into(), message })?;
    let name = cluster_name(id);
    let is_ip = up.host.parse::<std::net::IpAddr>().is_ok();
    let address = Address { socket_address: SocketAddress { address: up.host.clone(), port_value: up.port } };
    let transport_socket = up.tls.then(|| {
        // The certificate must be signed by a trusted CA *and* name the
        // channel's host: without the name check any certificate a trusted CA
        // signed, for any host, would receive the channel's key.
        let san_type = if is_ip { "IP_ADDRESS" } else { "DNS" };
        Extension {
            name: "envoy.transport_sockets.tls".into(),
            typed_config: Typed::UpstreamTlsContext {
                sni: up.host.clone(),
                common_tls_context: CommonTlsContext {
                    validation_context: ValidationContext {
                        trusted_ca: FileName { filename: config.server.ca_file.clone() },
                        match_typed_subject_alt_names: vec![SanMatcher {
                            san_type,
                            matcher: ExactMatch { exact: up.host.clone() },
                        }],
                    },
                },
            },
        }
    });
    Ok(Cluster {
        discovery: if is_ip { DiscoveryType::Static } else { DiscoveryType::LogicalDns },
        dns_lookup_family: Some("V4_PREFERRED"),
        circuit_breakers: Some(thresholds()),
        transport_socket,
        ..static_cluster(&name, &seconds(config.server.connect_timeout), Some(address))
    })
}

/// The enabled channels' clusters, as the control plane serves them to Envoy
/// (cluster discovery), each with its `@type`.
pub fn channel_clusters(config: &Config) -> Result<Vec<(String, serde_json::Value)>, RenderError> {
    config
        .channels
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            let cluster = channel_cluster(config, &c.id, &c.base_url)?;
            let mut value = serde_json::to_value(&cluster).map_err(|e| RenderError::Yaml(e.to_string()))?;
            if let Some(fields) = value.as_object_mut() {
                fields.insert("@type".into(), CLUSTER_TYPE_URL.into());
            }
            Ok((cluster.name, value))
        })
        .collect()
}

/// The Envoy bootstrap as YAML.
pub fn render(config: &Config, opts: &RenderOptions) -> Result<String, RenderError> {
    let bootstrap = bootstrap(config, opts)?;
    let yaml = yaml_serde::to_string(&bootstrap).map_err(|e| RenderError::Yaml(e.to_string()))?;
    Ok(format!(
        "# Generated by `smart-router render-envoy`. Channels' clusters come from the control plane\n\
         # (cluster discovery): adding or moving a channel needs no new bootstrap and no restart.\n\
         # Listener {}, admin {}, control plane {}.\n{yaml}",
        config.server.listen, config.server.admin, config.control_plane.listen
    ))
}

pub fn bootstrap(config: &Config, opts: &RenderOptions) -> Result<Bootstrap, RenderError> {
    let clusters = vec![
        static_cluster(
            CONTROL_PLANE_CLUSTER,
            "2s",
            Some(socket("control_plane.listen", &config.control_plane.listen)?),
        ),
        static_cluster(NO_CHANNEL_CLUSTER, "1s", None),
    ];
    // Channels' clusters are served by the control plane; a bad base URL is
    // still an error here, where the user is looking.
    channel_clusters(config)?;

    let max_body = config.server.max_body_bytes;
    let router_config = |control_plane: Option<ControlPlaneLink>| {
        FilterConfig::Router(RouterConfig {
            // Clusters come and go with cluster discovery, and the control plane
            // names one in a table only once Envoy has it: no fixed list.
            clusters: Vec::new(),
            max_body_bytes: max_body,
            num_retries: Some(config.routing.max_retry_attempts as usize),
            control_plane,
        })
    };
    let upstream_codec =
        Extension { name: "envoy.filters.http.upstream_codec".into(), typed_config: Typed::UpstreamCodec {} };
    let router = |attempt: Extension| Extension {
        name: "envoy.filters.http.router".into(),
        typed_config: Typed::Router { upstream_http_filters: vec![attempt, upstream_codec.clone()] },
    };
    let attempt = FilterConfig::Attempt(AttemptConfig {});
    let http_filters = match &opts.dynamic_module_path {
        Some(module) => {
            let link = ControlPlaneLink {
                address: config.control_plane.listen.clone(),
                token: opts.table_token.clone(),
                poll_ms: config.control_plane.table_poll_ms,
            };
            vec![
                dynamic_module_filter("smart_router", module, &router_config(Some(link))),
                router(dynamic_module_filter("smart_router_attempt", module, &attempt)),
            ]
        }
        None => vec![
            wasm_filter("smart_router", &opts.wasm_path, &router_config(None)),
            Extension {
                name: "envoy.filters.http.header_to_metadata".into(),
                typed_config: Typed::HeaderToMetadata {
                    request_rules: vec![HeaderToMetadataRule {
                        header: PLAN_HEADER.into(),
                        on_header_present: MetadataTarget {
                            metadata_namespace: METADATA_NAMESPACE.into(),
                            key: PRIORITY_GROUPS_KEY.into(),
                            value_type: "PROTOBUF_VALUE",
                            encode: "BASE64",
                        },
                        remove: true,
                    }],
                },
            },
            wasm_filter("smart_router_clear", &opts.wasm_path, &FilterConfig::ClearRoute(ClearRouteConfig {})),
            router(wasm_filter("smart_router_attempt", &opts.wasm_path, &attempt)),
        ],
    };

    let route = Route {
        route_match: PrefixMatch { prefix: "/".into() },
        // Bodies are buffered whole (the filter reads `model`, retries resend it).
        request_body_buffer_limit: max_body,
        route: RouteAction {
            inline_cluster_specifier_plugin: ClusterSpecifierPlugin { extension: cluster_specifier(config, opts) },
            // Streams may run for minutes: no overall route timeout.
            timeout: "0s".into(),
            retry_policy: retry_policy(config, config.routing.max_retry_attempts),
            // Silence before or between chunks. The stream's own idle timer (which
            // Envoy runs for every stream anyway) rather than a per-try one: a
            // per-try idle timer costs a timer per attempt, and before the first
            // byte `per_try_timeout` (never longer) fires first and fails over.
            idle_timeout: seconds(config.routing.idle_timeout),
        },
        // A client's own credentials never reach a provider, on any path: Envoy
        // drops them before the first attempt, and each attempt sets only its
        // channel's key.
        request_headers_to_remove: vec!["authorization".into(), "x-api-key".into()],
    };

    let too_large = format!("request body is larger than the router's limit of {max_body} bytes");
    let hcm = HttpConnectionManager {
        stat_prefix: "smart_router".into(),
        codec_type: "AUTO",
        route_config: RouteConfig {
            name: "smart_router".into(),
            virtual_hosts: vec![VirtualHost {
                name: "smart_router".into(),
                domains: vec!["*".into()],
                // The wasm attempt filter reads x-envoy-attempt-count from the request
                // (the module reads Envoy's attempt count instead, so providers do not
                // see the header); the response carries it to the wasm router role.
                include_request_attempt_count: opts.dynamic_module_path.is_none(),
                include_attempt_count_in_response: true,
                routes: vec![route],
            }],
        },
        http_filters,
        local_reply_config: LocalReplyConfig {
            mappers: vec![LocalReplyMapper {
                filter: StatusCodeFilter {
                    status_code_filter: StatusComparison {
                        comparison: Comparison {
                            op: "EQ",
                            value: RuntimeValue { default_value: 413, runtime_key: "smart_router.413".into() },
                        },
                    },
                },
                body_format_override: BodyFormat {
                    json_format: ErrorJson {
                        error: ErrorFields {
                            message: too_large,
                            kind: "invalid_request_error",
                            code: "request_too_large",
                        },
                    },
                    content_type: "application/json",
                },
            }],
        },
    };

    let module = opts.dynamic_module_path.is_some();
    // The wasm path's stats carry their label inside the name
    // (`sar.channel.channel=<id>.attempts`); these tags cut it out. The module's
    // counters are labelled already.
    let stats_config = (!module).then(|| StatsConfig {
        stats_tags: ["channel", "model"]
            .iter()
            .map(|l| StatsTag { tag_name: (*l).into(), regex: format!("^wasmcustom\\.sar\\.{l}\\.({l}=([^.]+)\\.)") })
            .collect(),
    });
    // The module fetches the table itself: no wasm service.
    let bootstrap_extensions = if module {
        Vec::new()
    } else {
        vec![Extension {
            name: "envoy.bootstrap.wasm".into(),
            typed_config: Typed::WasmService {
                singleton: true,
                config: PluginConfig {
                    name: "smart_router_service".into(),
                    root_id: "smart_router_service".into(),
                    vm_config: vm_config(&opts.wasm_path),
                    configuration: string_value(
                        FilterConfig::Service(ServiceConfig {
                            control_plane_cluster: CONTROL_PLANE_CLUSTER.into(),
                            control_plane_authority: config.control_plane.listen.clone(),
                            token: opts.table_token.clone(),
                            poll_ms: config.control_plane.table_poll_ms,
                        })
                        .to_json(),
                    ),
                    failure_policy: None,
                    allow_on_headers_stop_iteration: None,
                },
            },
        }]
    };
    // The module's counters live in Envoy's `dynamicmodulescustom` namespace; this
    // makes Prometheus show them as the wasm filter's are
    // (`sar_channel_attempts{channel="..."}`, no `envoy_` prefix). The admin layer
    // keeps `/runtime_modify` working, as without `layered_runtime`.
    let layered_runtime = module.then(|| LayeredRuntime {
        layers: vec![
            RuntimeLayer {
                name: "smart_router".into(),
                static_layer: Some(BTreeMap::from([(
                    "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix".to_string(),
                    true,
                )])),
                admin_layer: None,
            },
            RuntimeLayer { name: "admin".into(), static_layer: None, admin_layer: Some(Empty {}) },
        ],
    });
    Ok(Bootstrap {
        node: Node { id: "smart-router".into(), cluster: "smart-router".into() },
        admin: Admin { address: socket("server.admin", &config.server.admin)? },
        stats_config,
        bootstrap_extensions,
        static_resources: StaticResources {
            listeners: vec![Listener {
                name: "smart_router".into(),
                address: socket("server.listen", &config.server.listen)?,
                // Whole request bodies are buffered (routing reads `model`; retries
                // resend the body), so the connection buffer must hold the largest.
                per_connection_buffer_limit_bytes: max_body,
                filter_chains: vec![FilterChain {
                    filters: vec![Extension {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        typed_config: Typed::HttpConnectionManager(Box::new(hcm)),
                    }],
                }],
            }],
            clusters,
        },
        dynamic_resources: DynamicResources {
            cds_config: ConfigSource {
                resource_api_version: "V3",
                initial_fetch_timeout: "5s".into(),
                api_config_source: ApiConfigSource {
                    api_type: "REST",
                    transport_api_version: "V3",
                    cluster_names: vec![CONTROL_PLANE_CLUSTER.into()],
                    refresh_delay: format!("{}s", CDS_REFRESH_MS as f64 / 1000.0),
                    request_timeout: "2s".into(),
                },
            },
        },
        layered_runtime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    /// `envoy/envoy.example.yaml` documents the generated config: it must be what
    /// the renderer writes for the quickstart config (after its own comment lines).
    #[test]
    fn the_envoy_example_is_what_render_envoy_writes() {
        let text = include_str!("../../../examples/quickstart.yaml");
        let c = crate::config::parse(text, "quickstart.yaml", &|_| None).unwrap();
        let opts = RenderOptions {
            wasm_path: "/path/to/router_filter.wasm".into(),
            dynamic_module_path: None,
            table_token: "REPLACE_WITH_TABLE_TOKEN".into(),
        };
        let rendered = render(&c, &opts).unwrap();
        let example = include_str!("../../../envoy/envoy.example.yaml");
        let body = |s: &str| s.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
        assert!(
            body(example) == body(&rendered),
            "envoy/envoy.example.yaml is stale: regenerate it with the command in its first lines"
        );
    }

    #[test]
    fn https_channels_verify_the_certificate_names_the_host() {
        let text = "channels:\n  - id: a\n    base_url: https://api.example.com/v1\n  - id: b\n    base_url: https://10.0.0.2:8443/v1\n";
        let c = crate::config::parse(text, "router.yaml", &|_| None).unwrap();
        let clusters = channel_clusters(&c).unwrap();
        let tls = |name: &str| {
            let (_, c) = clusters.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(c["@type"], CLUSTER_TYPE_URL);
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
        let b = serde_json::to_value(bootstrap(&config(), &opts).unwrap()).unwrap();
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
        let b = serde_json::to_value(bootstrap(&config(), &opts).unwrap()).unwrap();
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
