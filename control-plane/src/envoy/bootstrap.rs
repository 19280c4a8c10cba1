//! The part of Envoy's bootstrap configuration `render-envoy` writes, as types
//! that serialise to Envoy's own YAML/JSON form (field names as in Envoy's v3
//! protos). A typed config is a [`Typed`] value: its variant names the proto's
//! `@type`.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    pub node: Node,
    pub admin: Admin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_config: Option<StatsConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_extensions: Vec<Extension>,
    pub static_resources: StaticResources,
    pub dynamic_resources: DynamicResources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layered_runtime: Option<LayeredRuntime>,
}

/// Where Envoy gets what is not in the bootstrap: the channels' clusters.
#[derive(Debug, Clone, Serialize)]
pub struct DynamicResources {
    pub cds_config: ConfigSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigSource {
    pub resource_api_version: &'static str,
    /// How long Envoy's start waits for the first answer.
    pub initial_fetch_timeout: String,
    pub api_config_source: ApiConfigSource,
}

/// REST-JSON polling of a discovery service on a static cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ApiConfigSource {
    pub api_type: &'static str,
    pub transport_api_version: &'static str,
    pub cluster_names: Vec<String>,
    pub refresh_delay: String,
    pub request_timeout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
    pub cluster: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    pub address: Address,
}

#[derive(Debug, Clone, Serialize)]
pub struct Address {
    pub socket_address: SocketAddress,
}

#[derive(Debug, Clone, Serialize)]
pub struct SocketAddress {
    pub address: String,
    pub port_value: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsConfig {
    pub stats_tags: Vec<StatsTag>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsTag {
    pub tag_name: String,
    pub regex: String,
}

/// A named extension with its typed configuration (filters, specifiers,
/// transport sockets, bootstrap extensions).
#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    pub name: String,
    pub typed_config: Typed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StaticResources {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: String,
    pub address: Address,
    pub per_connection_buffer_limit_bytes: usize,
    pub filter_chains: Vec<FilterChain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterChain {
    pub filters: Vec<Extension>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscoveryType {
    Static,
    LogicalDns,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "type")]
    pub discovery: DiscoveryType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_lookup_family: Option<&'static str>,
    pub connect_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    pub load_assignment: LoadAssignment,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<Extension>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CircuitBreakers {
    pub thresholds: Vec<Thresholds>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadAssignment {
    pub cluster_name: String,
    pub endpoints: Vec<LocalityEndpoints>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalityEndpoints {
    pub lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LbEndpoint {
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub address: Address,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayeredRuntime {
    pub layers: Vec<RuntimeLayer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeLayer {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_layer: Option<BTreeMap<String, bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_layer: Option<Empty>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Empty {}

/// Typed configurations by their `@type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "@type")]
pub enum Typed {
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    )]
    HttpConnectionManager(Box<HttpConnectionManager>),
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")]
    Wasm { config: PluginConfig },
    #[serde(rename = "type.googleapis.com/envoy.extensions.wasm.v3.WasmService")]
    WasmService { singleton: bool, config: PluginConfig },
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter")]
    DynamicModuleFilter { dynamic_module_config: DynamicModuleConfig, filter_name: String, filter_config: Box<Typed> },
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")]
    Router {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        upstream_http_filters: Vec<Extension>,
    },
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec")]
    UpstreamCodec {},
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config")]
    HeaderToMetadata { request_rules: Vec<HeaderToMetadataRule> },
    #[serde(rename = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")]
    UpstreamTlsContext { sni: String, common_tls_context: CommonTlsContext },
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier"
    )]
    PriorityGroupClusterSpecifier { override_metadata_namespace: String, priority_groups: Vec<PriorityGroup> },
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.router.cluster_specifiers.dynamic_modules.v3.DynamicModuleClusterSpecifier"
    )]
    DynamicModuleClusterSpecifier {
        dynamic_module_config: DynamicModuleConfig,
        specifier_name: String,
        specifier_config: Box<Typed>,
        route_action_overrides: BTreeMap<String, RouteActionOverride>,
    },
    /// A plain string, as a plugin's or module's configuration.
    #[serde(rename = "type.googleapis.com/google.protobuf.StringValue")]
    StringValue { value: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginConfig {
    pub name: String,
    pub root_id: String,
    pub vm_config: VmConfig,
    pub configuration: Box<Typed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_on_headers_stop_iteration: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmConfig {
    pub vm_id: String,
    pub runtime: String,
    pub code: LocalSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalSource {
    pub local: FileName,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileName {
    pub filename: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DynamicModuleConfig {
    pub module: LocalSource,
    pub do_not_close: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderToMetadataRule {
    pub header: String,
    pub on_header_present: MetadataTarget,
    pub remove: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetadataTarget {
    pub metadata_namespace: String,
    pub key: String,
    #[serde(rename = "type")]
    pub value_type: &'static str,
    pub encode: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommonTlsContext {
    pub validation_context: ValidationContext,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationContext {
    pub trusted_ca: FileName,
    pub match_typed_subject_alt_names: Vec<SanMatcher>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SanMatcher {
    pub san_type: &'static str,
    pub matcher: ExactMatch,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExactMatch {
    pub exact: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriorityGroup {
    pub name: String,
    pub clusters: Vec<WeightedCluster>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WeightedCluster {
    pub cluster_name: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteActionOverride {
    pub retry_policy: RetryPolicy,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub codec_type: &'static str,
    pub route_config: RouteConfig,
    pub http_filters: Vec<Extension>,
    pub local_reply_config: LocalReplyConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub include_request_attempt_count: bool,
    pub include_attempt_count_in_response: bool,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    #[serde(rename = "match")]
    pub route_match: PrefixMatch,
    pub request_body_buffer_limit: usize,
    pub route: RouteAction,
    pub request_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefixMatch {
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteAction {
    pub inline_cluster_specifier_plugin: ClusterSpecifierPlugin,
    pub timeout: String,
    pub retry_policy: RetryPolicy,
    pub idle_timeout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterSpecifierPlugin {
    pub extension: Extension,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_cluster_on_retry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_back_off: Option<BackOff>,
    pub per_try_timeout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackOff {
    pub base_interval: String,
    pub max_interval: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalReplyConfig {
    pub mappers: Vec<LocalReplyMapper>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalReplyMapper {
    pub filter: StatusCodeFilter,
    pub body_format_override: BodyFormat,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusCodeFilter {
    pub status_code_filter: StatusComparison,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusComparison {
    pub comparison: Comparison,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub op: &'static str,
    pub value: RuntimeValue,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeValue {
    pub default_value: u32,
    pub runtime_key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BodyFormat {
    pub json_format: ErrorJson,
    pub content_type: &'static str,
}

/// An OpenAI-shaped error body for one of Envoy's own local replies.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorJson {
    pub error: ErrorFields,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorFields {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
}
