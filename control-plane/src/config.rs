//! The one YAML file a user writes. Parsing is strict: an unknown key or a bad
//! value is an error naming the file, the key path and why, never a silent default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use router_core::table::valid_channel_id;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub control_plane: ControlPlaneConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Virtual model groups. Validated here; see README for what routes today.
    #[serde(default)]
    pub model_groups: BTreeMap<String, ModelGroupConfig>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

/// Envoy's side: where clients connect.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Client API listener (`host:port`).
    pub listen: String,
    /// Envoy admin (`/stats`, `/stats/prometheus`).
    pub admin: String,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Upstream connect timeout, seconds.
    pub connect_timeout: f64,
    /// CA bundle for https channels.
    pub ca_file: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7601".into(),
            admin: "127.0.0.1:9901".into(),
            max_body_bytes: 32 * 1024 * 1024,
            concurrency: 2,
            connect_timeout: 5.0,
            ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    pub listen: String,
    /// Shared secret filters present to fetch the table (it holds provider keys).
    /// Empty: generated once into `<data_dir>/table.token`.
    pub table_token: String,
    /// Bearer token for the admin API (`/admin/v1/...`). Empty: generated once into
    /// `<data_dir>/admin.token`.
    pub admin_token: String,
    /// Where generated tokens and caches live (relative to the working directory).
    pub data_dir: PathBuf,
    /// Seconds between model discoveries per channel.
    pub discovery_interval: u64,
    /// Seconds one discovery call may take.
    pub discovery_timeout: u64,
    /// Seconds between key checks (`GET /models`, no tokens spent) per channel; a
    /// channel that answered 401/403 comes back after the next good check.
    pub key_validation_interval: u64,
    /// Seconds between health checks (the same `GET /models` call); a channel whose
    /// check gets no answer or a 5xx is a last resort until one succeeds.
    pub health_check_interval: u64,
    /// How often the config file is checked for changes, milliseconds.
    pub reload_poll_ms: u64,
    /// How often Envoy polls for a new table, milliseconds.
    pub table_poll_ms: u64,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7602".into(),
            table_token: String::new(),
            admin_token: String::new(),
            data_dir: PathBuf::from("data"),
            discovery_interval: 3600,
            discovery_timeout: 10,
            key_validation_interval: 1800,
            health_check_interval: 300,
            reload_poll_ms: 500,
            table_poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub enabled: bool,
    pub api_token: String,
    pub api_tokens: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub default_strategy: String,
    /// Attempts after the first one.
    pub max_retry_attempts: u32,
    /// Seconds a failing channel cools down (used by the health work).
    pub error_cooldown_period: u64,
    pub enable_fallback: bool,
    pub debug_headers: bool,
    /// Seconds an attempt may take to start its response (for a non-streaming
    /// request: the whole answer); then the next channel is tried.
    pub first_byte_timeout: f64,
    /// Seconds an attempt may stay silent, before or during its response. Once the
    /// response has started, a timeout ends it (nothing can fail over mid-stream).
    pub idle_timeout: f64,
    pub circuit_breaker: CircuitBreakerConfig,
    pub model_filters: ModelFilters,
    pub sorting_strategies: BTreeMap<String, Vec<SortField>>,
    /// Quality (0..1) by model core name (`qwen3-235b-a22b: 0.95`), overriding the
    /// estimate from size.
    pub model_quality: BTreeMap<String, f64>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_strategy: "cost_first".into(),
            max_retry_attempts: 3,
            error_cooldown_period: 60,
            enable_fallback: true,
            debug_headers: true,
            first_byte_timeout: 120.0,
            idle_timeout: 300.0,
            circuit_breaker: CircuitBreakerConfig::default(),
            model_filters: ModelFilters::default(),
            sorting_strategies: BTreeMap::new(),
            model_quality: BTreeMap::new(),
        }
    }
}

/// When a failing channel (or channel+model) is taken out, and for how long.
/// `routing.error_cooldown_period` is the first cooldown; it doubles per trip.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Seconds over which failures are counted.
    pub window: u64,
    /// Failures in the window before it opens...
    pub min_failures: u32,
    /// ...when they are at least this share of the window's attempts.
    pub failure_ratio: f64,
    /// Longest cooldown, seconds.
    pub max_cooldown: u64,
    /// Rest after a 429 without Retry-After, seconds.
    pub rate_limit_cooldown: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self { window: 30, min_failures: 3, failure_ratio: 0.5, max_cooldown: 600, rate_limit_cooldown: 60 }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelFilters {
    pub min_context_length: Option<u64>,
    pub min_parameter_count: Option<f64>,
    /// Accepted for older configs: non-chat models (embedding, rerank, speech,
    /// image, moderation) are never routed as chat, so only `true` is allowed.
    pub exclude_embedding_models: Option<bool>,
    pub max_cost_per_1k: Option<f64>,
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SortField {
    pub field: String,
    #[serde(default)]
    pub order: Option<SortOrder>,
    #[serde(default = "one_f64")]
    pub weight: f64,
}

fn one_f64() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelGroupConfig {
    pub display_name: String,
    pub description: String,
    /// A model query (`tag:free,qwen3,!local`) selecting the group's members.
    pub query: String,
    pub routing_strategy: Vec<SortField>,
    pub filters: ModelFilters,
    pub channels: Vec<GroupChannel>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupChannel {
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    pub model: String,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub daily_limit: Option<u64>,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// A provider template name (`openai`, `groq`, `ollama`, ...) or `openai_compatible`.
    #[serde(default = "openai_compatible")]
    pub provider: String,
    /// Defaults to the provider template's URL.
    #[serde(default)]
    pub base_url: String,
    /// The provider key; `${ENV_VAR}` reads it from the environment.
    #[serde(default)]
    pub api_key: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lower is preferred.
    #[serde(default = "default_priority")]
    pub priority: i32,
    #[serde(default = "one_f64")]
    pub weight: f64,
    /// Call `{base_url}/models` to learn the model list.
    #[serde(default = "yes")]
    pub discover: bool,
    /// Used when discovery is off or fails.
    #[serde(default)]
    pub configured_models: Vec<String>,
    /// Seeds' single-model form; same as one entry of `configured_models`.
    #[serde(default)]
    pub model_name: Option<String>,
    /// Standard name a client may use -> this channel's own model name.
    #[serde(default)]
    pub model_aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &if self.api_key.is_empty() { "" } else { "<redacted>" })
            .finish()
    }
}

/// Prices in USD per 1M tokens.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub multiplier: Option<f64>,
    pub models: BTreeMap<String, ModelPrice>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
}

fn openai_compatible() -> String {
    "openai_compatible".into()
}

fn yes() -> bool {
    true
}

fn default_priority() -> i32 {
    10
}

/// What a provider name implies when the channel does not say.
pub struct ProviderTemplate {
    pub name: &'static str,
    pub base_url: &'static str,
    pub tags: &'static [&'static str],
}

pub const PROVIDERS: &[ProviderTemplate] = &[
    ProviderTemplate { name: "openai", base_url: "https://api.openai.com/v1", tags: &["cloud"] },
    ProviderTemplate { name: "groq", base_url: "https://api.groq.com/openai/v1", tags: &["cloud"] },
    ProviderTemplate { name: "openrouter", base_url: "https://openrouter.ai/api/v1", tags: &["cloud"] },
    ProviderTemplate { name: "siliconflow", base_url: "https://api.siliconflow.cn/v1", tags: &["cloud"] },
    ProviderTemplate { name: "deepseek", base_url: "https://api.deepseek.com/v1", tags: &["cloud"] },
    ProviderTemplate { name: "zhipu", base_url: "https://open.bigmodel.cn/api/paas/v4", tags: &["cloud"] },
    ProviderTemplate { name: "doubao", base_url: "https://ark.cn-beijing.volces.com/api/v3", tags: &["cloud"] },
    ProviderTemplate { name: "burn_hair", base_url: "https://burn.hair/v1", tags: &["cloud"] },
    ProviderTemplate { name: "ollama", base_url: "http://127.0.0.1:11434/v1", tags: &["local"] },
    ProviderTemplate { name: "lmstudio", base_url: "http://127.0.0.1:1234/v1", tags: &["local"] },
    ProviderTemplate { name: "openai_compatible", base_url: "", tags: &[] },
];

pub fn provider_template(name: &str) -> Option<&'static ProviderTemplate> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// A base URL split into what Envoy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host` or `host:port` when the port is not the scheme's default.
    pub authority: String,
    /// Path without a trailing slash (`/v1`), possibly empty.
    pub path_prefix: String,
}

pub fn parse_base_url(url: &str) -> Result<Upstream, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("\"{url}\" must start with http:// or https://"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(format!("\"{url}\" must not have a query or fragment"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or_else(|| format!("\"{url}\" has an unclosed IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| format!("\"{url}\" has a bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("\"{url}\" is not a valid URL")),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| format!("\"{url}\" has a bad port"))?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(format!("\"{url}\" has no valid host"));
    }
    let shown_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let authority = if port == default_port { shown_host } else { format!("{shown_host}:{port}") };
    Ok(Upstream { tls, host, port, authority, path_prefix: path.trim_end_matches('/').to_string() })
}

/// A config file that failed to load: the file, the key path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Read, parse, substitute environment variables, fill provider defaults, validate.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        path: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file, &|name| std::env::var(name).ok())
}

pub fn parse(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let err = |path: String, message: String| ConfigError { file: file.to_string(), path, message };
    let de = serde_yaml::Deserializer::from_str(text);
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml prefixes its own (shorter) path; ours is the full one.
        let inner = match inner.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_string(),
            _ => inner,
        };
        err(path, inner)
    })?;

    // Environment substitution, only in values that may hold secrets or addresses.
    let subst = |value: &mut String, at: String| -> Result<(), ConfigError> {
        *value = substitute_env(value, env).map_err(|m| err(at, m))?;
        Ok(())
    };
    subst(&mut config.control_plane.table_token, "control_plane.table_token".into())?;
    subst(&mut config.control_plane.admin_token, "control_plane.admin_token".into())?;
    subst(&mut config.auth.api_token, "auth.api_token".into())?;
    for (i, t) in config.auth.api_tokens.iter_mut().enumerate() {
        subst(t, format!("auth.api_tokens[{i}]"))?;
    }
    for (i, c) in config.channels.iter_mut().enumerate() {
        if !c.enabled {
            continue;
        }
        subst(&mut c.api_key, format!("channels[{i}].api_key"))?;
        subst(&mut c.base_url, format!("channels[{i}].base_url"))?;
    }
    validate(&mut config).map_err(|(path, message)| err(path, message))?;
    Ok(config)
}

/// `${NAME}` and `${NAME:-default}`; a missing variable without a default is an error.
pub fn substitute_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed ${ in value".to_string())?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("\"${{{expr}}}\" is not a valid environment variable reference"));
        }
        match (env(name), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            _ => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(c: &mut Config) -> Result<(), (String, String)> {
    let e = |p: &str, m: String| Err((p.to_string(), m));
    for (key, addr) in [
        ("server.listen", &c.server.listen),
        ("server.admin", &c.server.admin),
        ("control_plane.listen", &c.control_plane.listen),
    ] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return e(key, format!("\"{addr}\" is not an address like 127.0.0.1:7601"));
        }
    }
    if c.server.max_body_bytes < 1024 {
        return e("server.max_body_bytes", "must be at least 1024".into());
    }
    if !(1..=64).contains(&c.server.concurrency) {
        return e("server.concurrency", "must be between 1 and 64".into());
    }
    if !(c.server.connect_timeout > 0.0 && c.server.connect_timeout <= 300.0) {
        return e("server.connect_timeout", "must be between 0 and 300 seconds".into());
    }
    if c.control_plane.reload_poll_ms < 50 || c.control_plane.table_poll_ms < 50 {
        return e("control_plane", "reload_poll_ms and table_poll_ms must be at least 50".into());
    }
    if c.control_plane.discovery_timeout == 0 || c.control_plane.discovery_interval == 0 {
        return e("control_plane", "discovery_timeout and discovery_interval must be positive".into());
    }
    let (fb, idle) = (c.routing.first_byte_timeout, c.routing.idle_timeout);
    if !(fb > 0.0 && fb <= 3600.0 && idle > 0.0 && idle <= 3600.0) {
        return e("routing", "first_byte_timeout and idle_timeout must be between 0 and 3600 seconds".into());
    }
    if idle < fb {
        return e(
            "routing.idle_timeout",
            format!("must be at least first_byte_timeout ({fb} s): a non-streaming answer is silent until it is done"),
        );
    }
    let cb = &c.routing.circuit_breaker;
    if !(cb.failure_ratio > 0.0 && cb.failure_ratio <= 1.0) || cb.min_failures == 0 || cb.window == 0 {
        return e(
            "routing.circuit_breaker",
            "window and min_failures must be positive, failure_ratio in (0, 1]".into(),
        );
    }
    if c.control_plane.key_validation_interval == 0 || c.control_plane.health_check_interval == 0 {
        return e("control_plane", "key_validation_interval and health_check_interval must be positive".into());
    }
    if c.routing.max_retry_attempts > 20 {
        return e("routing.max_retry_attempts", "must be at most 20".into());
    }
    for (name, fields) in &c.routing.sorting_strategies {
        for (i, f) in fields.iter().enumerate() {
            check_sort_field(f).map_err(|m| (format!("routing.sorting_strategies.{name}[{i}]"), m))?;
        }
    }
    let embedding_filters = std::iter::once(("routing.model_filters".to_string(), &c.routing.model_filters))
        .chain(c.model_groups.iter().map(|(n, g)| (format!("model_groups.{n}.filters"), &g.filters)));
    for (at, f) in embedding_filters {
        if f.exclude_embedding_models == Some(false) {
            return e(
                &format!("{at}.exclude_embedding_models"),
                "non-chat models (embedding, rerank, speech, image) are never routed as chat; remove this key or set it to true".into(),
            );
        }
    }
    for cap in &c.routing.model_filters.capabilities {
        if cap != "tools" && cap != "vision" {
            return e("routing.model_filters.capabilities", format!("unknown capability \"{cap}\" (tools, vision)"));
        }
    }
    for (m, q) in &c.routing.model_quality {
        if !(0.0..=1.0).contains(q) {
            return e(&format!("routing.model_quality.{m}"), "must be between 0 and 1".into());
        }
    }
    let strategy = &c.routing.default_strategy;
    if !router_core::score::BUILTIN.contains(&strategy.as_str()) && !c.routing.sorting_strategies.contains_key(strategy)
    {
        return e(
            "routing.default_strategy",
            format!(
                "unknown strategy \"{strategy}\"; use one of {} or a name under routing.sorting_strategies",
                router_core::score::BUILTIN.join(", ")
            ),
        );
    }
    for (i, t) in c.auth.api_tokens.iter().chain(std::iter::once(&c.auth.api_token)).enumerate() {
        if t.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return e(&format!("auth.api_tokens[{i}]"), "tokens must be printable ASCII without spaces".into());
        }
    }

    let mut ids = BTreeSet::new();
    for (i, ch) in c.channels.iter_mut().enumerate() {
        let at = format!("channels[{i}]");
        if !valid_channel_id(&ch.id) {
            return e(&format!("{at}.id"), format!("\"{}\" must be 1-64 characters of A-Z a-z 0-9 _ -", ch.id));
        }
        if !ids.insert(ch.id.clone()) {
            return e(&format!("{at}.id"), format!("duplicate channel id \"{}\"", ch.id));
        }
        let Some(template) = provider_template(&ch.provider) else {
            let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
            return e(
                &format!("{at}.provider"),
                format!(
                    "unknown provider \"{}\"; known: {} (anthropic translation is not built yet)",
                    ch.provider,
                    known.join(", ")
                ),
            );
        };
        if ch.base_url.is_empty() {
            if template.base_url.is_empty() {
                return e(&format!("{at}.base_url"), "required for provider openai_compatible".into());
            }
            ch.base_url = template.base_url.to_string();
        }
        if ch.enabled {
            parse_base_url(&ch.base_url).map_err(|m| (format!("{at}.base_url"), m))?;
        }
        if ch.api_key.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            return e(&format!("{at}.api_key"), "must be printable ASCII".into());
        }
        if ch.name.is_empty() {
            ch.name = ch.id.clone();
        }
        if !(ch.weight > 0.0 && ch.weight <= 1000.0) {
            return e(&format!("{at}.weight"), "must be greater than 0 and at most 1000".into());
        }
        if let Some(m) = ch.model_name.take() {
            if !ch.configured_models.contains(&m) {
                ch.configured_models.push(m);
            }
        }
        for (j, m) in ch.configured_models.iter().enumerate() {
            if m.trim().is_empty() || m.len() > 512 {
                return e(&format!("{at}.configured_models[{j}]"), "model names must be 1-512 characters".into());
            }
        }
        for (k, v) in &ch.model_aliases {
            if k.trim().is_empty() || v.trim().is_empty() {
                return e(&format!("{at}.model_aliases"), "alias names and targets must not be empty".into());
            }
        }
        for t in ch.tags.iter_mut() {
            *t = t.trim().to_ascii_lowercase();
        }
        for extra in template.tags {
            if !ch.tags.iter().any(|t| t == extra) {
                ch.tags.push((*extra).to_string());
            }
        }
        if !ch.discover && ch.configured_models.is_empty() && ch.model_aliases.is_empty() && ch.enabled {
            return e(
                &format!("{at}.configured_models"),
                "a channel with discover: false needs configured_models or model_aliases".into(),
            );
        }
        if let Some(p) = &ch.pricing {
            let prices = [p.input, p.output, p.multiplier].into_iter().flatten();
            let model_prices = p.models.values().flat_map(|m| [m.input, m.output]);
            if prices.chain(model_prices).any(|x| !(x >= 0.0 && x.is_finite())) {
                return e(&format!("{at}.pricing"), "prices and multipliers must be zero or positive".into());
            }
        }
    }
    for (name, g) in &c.model_groups {
        if !g.query.trim().is_empty() {
            match router_core::query::parse(&g.query) {
                Ok(router_core::query::Query::Tags { .. }) => {}
                Ok(_) => {
                    return e(&format!("model_groups.{name}.query"), "must be a tag query like tag:qwen3,!local".into())
                }
                Err(err) => return e(&format!("model_groups.{name}.query"), err.0),
            }
        }
        for cap in &g.filters.capabilities {
            if cap != "tools" && cap != "vision" {
                return e(
                    &format!("model_groups.{name}.filters.capabilities"),
                    format!("unknown capability \"{cap}\" (tools, vision)"),
                );
            }
        }
        for (i, f) in g.routing_strategy.iter().enumerate() {
            check_sort_field(f).map_err(|m| (format!("model_groups.{name}.routing_strategy[{i}]"), m))?;
        }
        for (i, gc) in g.channels.iter().enumerate() {
            if let Some(id) = &gc.channel {
                if !ids.contains(id) {
                    return e(
                        &format!("model_groups.{name}.channels[{i}].channel"),
                        format!("no channel with id \"{id}\""),
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_sort_field(f: &SortField) -> Result<(), String> {
    if router_core::score::Field::parse(&f.field).is_none() {
        return Err(format!(
            "unknown field \"{}\"; use cost, speed, quality, reliability, parameters, context, quota_remaining, priority, free or local (a _score suffix is fine)",
            f.field
        ));
    }
    if !(f.weight >= 0.0 && f.weight.is_finite()) {
        return Err("weight must be zero or positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "GROQ_KEY" => Some("gsk-secret".into()),
            _ => None,
        }
    }

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, "router.yaml", &env)
    }

    #[test]
    fn minimal_config_gets_defaults_and_templates() {
        let c = load_str(
            "channels:\n  - id: groq\n    provider: groq\n    api_key: ${GROQ_KEY}\n  - id: local\n    provider: ollama\n",
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7601");
        assert_eq!(c.channels[0].base_url, "https://api.groq.com/openai/v1");
        assert_eq!(c.channels[0].api_key, "gsk-secret");
        assert!(c.channels[1].tags.contains(&"local".to_string()));
        assert_eq!(c.routing.max_retry_attempts, 3);
    }

    #[test]
    fn errors_name_file_path_and_reason() {
        let e = load_str("channels:\n  - id: a\n    base_url: http://x\n    api_kye: k\n").unwrap_err();
        assert_eq!(e.path, "channels[0].api_kye");
        assert!(e.to_string().starts_with("router.yaml: channels[0].api_kye: unknown field `api_kye`"), "{e}");

        let e = load_str("routing:\n  max_retry_attempts: lots\n").unwrap_err();
        assert_eq!(e.path, "routing.max_retry_attempts");

        let e = load_str("channels:\n  - id: a\n    provider: groq\n    api_key: ${NOPE}\n").unwrap_err();
        assert_eq!(e.path, "channels[0].api_key");
        assert!(e.message.contains("NOPE"));

        let e = load_str("channels:\n  - id: a\n    base_url: ftp://x\n").unwrap_err();
        assert_eq!(e.path, "channels[0].base_url");

        let e =
            load_str("channels:\n  - id: a\n    base_url: http://x\n  - id: a\n    base_url: http://y\n").unwrap_err();
        assert!(e.message.contains("duplicate"));

        let e = load_str("channels:\n  - id: 'a b'\n    base_url: http://x\n").unwrap_err();
        assert_eq!(e.path, "channels[0].id");

        let e = load_str("routing:\n  default_strategy: fastest\n").unwrap_err();
        assert_eq!(e.path, "routing.default_strategy");

        let e = load_str("channels: [\n").unwrap_err();
        assert!(!e.message.is_empty());
    }

    #[test]
    fn embedding_models_cannot_be_let_into_chat_routing() {
        let e = load_str("routing:\n  model_filters:\n    exclude_embedding_models: false\n").unwrap_err();
        assert_eq!(e.path, "routing.model_filters.exclude_embedding_models");
        assert!(load_str("routing:\n  model_filters:\n    exclude_embedding_models: true\n").is_ok());
    }

    #[test]
    fn disabled_channels_may_lack_env() {
        let c =
            load_str("channels:\n  - id: a\n    provider: groq\n    enabled: false\n    api_key: ${NOPE}\n").unwrap();
        assert!(!c.channels[0].enabled);
    }

    #[test]
    fn env_substitution_forms() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(substitute_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(substitute_env("${B:-dflt}", &env).unwrap(), "dflt");
        assert!(substitute_env("${B}", &env).is_err());
        assert!(substitute_env("${A", &env).is_err());
        assert!(substitute_env("${A-B}", &env).is_err());
    }

    #[test]
    fn base_urls_split_for_envoy() {
        let u = parse_base_url("https://api.groq.com/openai/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.authority.as_str(), u.path_prefix.as_str()),
            (true, "api.groq.com", 443, "api.groq.com", "/openai/v1")
        );
        let u = parse_base_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.authority.as_str(), u.path_prefix.as_str()), ("127.0.0.1:8080", ""));
        let u = parse_base_url("http://[::1]:9/v1").unwrap();
        assert_eq!((u.host.as_str(), u.authority.as_str()), ("::1", "[::1]:9"));
        for bad in ["api.x.com/v1", "http://", "http://h:99999", "http://h/v1?x=1", "http://user@h"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_keys() {
        let c = load_str("channels:\n  - id: groq\n    provider: groq\n    api_key: ${GROQ_KEY}\n").unwrap();
        assert!(!format!("{c:?}").contains("gsk-secret"));
    }

    #[test]
    fn older_model_groups_and_strategies_parse() {
        let c = load_str(
            r#"
routing:
  default_strategy: my_mix
  sorting_strategies:
    my_mix:
      - field: cost_score
        weight: 0.4
      - field: speed_score
        order: desc
        weight: 0.6
model_groups:
  auto:free:
    display_name: free models
    routing_strategy:
      - field: effective_cost
        order: asc
        weight: 1.0
    filters:
      max_cost_per_1k: 0.0
      min_context_length: 4000
    channels:
      - provider: groq
        model: llama-3.1-8b-instant
        priority: 1
        weight: 1.5
        daily_limit: 1000
"#,
        )
        .unwrap();
        assert_eq!(c.model_groups["auto:free"].channels[0].daily_limit, Some(1000));
    }
}
