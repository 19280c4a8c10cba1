//! The YAML file's shape: every key a user may write, with its default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

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
    /// Virtual model groups.
    #[serde(default)]
    pub model_groups: BTreeMap<String, ModelGroupConfig>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Where usage records (and, later, administrative changes) are kept.
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub statistics: StatisticsConfig,
    #[serde(default)]
    pub usage: UsageConfig,
    /// Spending limits in USD per day or month.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// A spending limit. It covers everything, or the one channel, model group
/// (the name clients ask for) or client token (by id) it names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub id: String,
    pub limit_usd: f64,
    /// `day`, `week` (from Monday) or `month`.
    #[serde(default = "month")]
    pub period: crate::usage::stats::Period,
    /// The period starts at `reset` (`HH:MM`) in this zone.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "midnight")]
    pub reset: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    /// Raise an alert once this share of the limit is spent.
    #[serde(default = "alert_share")]
    pub alert_at: f64,
    /// `free_only`: once spent, only free and local channels serve what it
    /// covers; `refuse`: every request it covers gets 429.
    #[serde(default)]
    pub when_exceeded: WhenExceeded,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenExceeded {
    #[default]
    FreeOnly,
    Refuse,
}

fn month() -> crate::usage::stats::Period {
    crate::usage::stats::Period::Month
}

fn midnight() -> String {
    "00:00".into()
}

fn alert_share() -> f64 {
    0.8
}

/// Where alerts go besides the log and `GET /admin/v1/alerts`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Each new alert is POSTed here as JSON (empty: no webhook).
    pub webhook_url: String,
}

/// Usage accounting (records, tokens, cost and their stats); on unless turned off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    pub enabled: bool,
    /// Output tokens a request without `max_tokens` holds against budgets.
    pub reserve_output_tokens: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { enabled: true, reserve_output_tokens: 1024 }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://path` or `postgres://user:pass@host/db`. Empty: SQLite in
    /// `<data_dir>/router.db`.
    pub url: String,
    /// Usage records older than this many days are deleted (0: kept for ever).
    pub retention_days: u32,
    /// Before deleting, write each old day's records to
    /// `<archive_dir>/usage-YYYY-MM-DD.jsonl` (days in `statistics.timezone`).
    /// Empty: deleted without an archive.
    pub archive_dir: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticsConfig {
    /// The time zone days, weeks and months are counted in (an IANA name).
    pub timezone: String,
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        Self { timezone: "UTC".into() }
    }
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
    /// `<data_dir>/admin.token`. Its id in the audit log is `admin`.
    pub admin_token: String,
    /// More admin API tokens, each with an id (named in the audit log) and a role.
    pub admin_tokens: Vec<AdminTokenConfig>,
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
            admin_tokens: Vec::new(),
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

/// An admin API token: `admin` may do everything, `viewer` may only read
/// (statistics, status, records, explain), for a dashboard shared read-only.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    pub id: String,
    /// The token (usually `${ENV}`), or ...
    #[serde(default)]
    pub token: String,
    /// ... its SHA-256 in hex.
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub role: AdminRole,
}

impl fmt::Debug for AdminTokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTokenConfig").field("id", &self.id).field("role", &self.role).finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    #[default]
    Admin,
    Viewer,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub enabled: bool,
    pub api_token: String,
    pub api_tokens: Vec<ApiToken>,
}

/// A client token: the token itself (a string), or an entry with an id, the
/// token or its SHA-256, and what it may use.
#[derive(Clone, PartialEq)]
pub enum ApiToken {
    Plain(String),
    Rules(TokenRules),
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiToken::Plain(_) => f.write_str("ApiToken(<redacted>)"),
            ApiToken::Rules(r) => f.debug_struct("ApiToken").field("id", &r.id).field("allow", &r.allow).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for ApiToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ApiToken;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token, or {id, token or sha256, allow}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ApiToken, E> {
                Ok(ApiToken::Plain(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ApiToken, A::Error> {
                TokenRules::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ApiToken::Rules)
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenRules {
    /// Named in usage records (never the token).
    pub id: String,
    /// The token (usually `${ENV}`), or ...
    #[serde(default)]
    pub token: String,
    /// ... its SHA-256 in hex, so the file holds no token.
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub allow: TokenAllow,
    /// Requests and tokens per minute, across Envoy's workers and the Envoys
    /// sharing this control plane; past them, 429 with `retry-after`.
    #[serde(default)]
    pub limits: Option<TokenLimitsConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenLimitsConfig {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    /// The window "per minute" means (60 unless set).
    pub window_seconds: f64,
}

impl Default for TokenLimitsConfig {
    fn default() -> Self {
        Self { requests_per_minute: 0, tokens_per_minute: 0, window_seconds: 60.0 }
    }
}

/// What a token may use; empty lists allow everything.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenAllow {
    /// Channel ids.
    pub channels: Vec<String>,
    /// Tags a model must have one of (its channel's tags and its own).
    pub tags: Vec<String>,
    /// What `model` may say (models, aliases, groups, queries).
    pub models: Vec<String>,
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
    /// Send prompts of at most this many tokens (estimated), without tools,
    /// that ask for an `auto:` group to its cheapest members first (0: off).
    pub simple_prompt_tokens: u64,
    /// Smart routing on, or off with every request sent to one default.
    pub switch: SwitchConfig,
}

/// The routing switch: smart routing on, or off with every request going to
/// `default`. Changed through `PUT /admin/v1/switch`, which takes effect
/// `delay_seconds` after it is asked and is refused until `cooldown_seconds`
/// after the last change took effect.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    pub smart: bool,
    /// When `smart` takes (or took) effect, ms since the epoch; before it the
    /// other setting is in force. Written by the admin API.
    pub since_ms: u64,
    pub delay_seconds: f64,
    pub cooldown_seconds: f64,
    /// Where every request goes while smart routing is off.
    pub default: Option<SwitchDefault>,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self { smart: true, since_ms: 0, delay_seconds: 0.0, cooldown_seconds: 0.0, default: None }
    }
}

impl SwitchConfig {
    /// Whether smart routing is on at `now_ms`.
    pub fn smart_at(&self, now_ms: u64) -> bool {
        if now_ms >= self.since_ms {
            self.smart
        } else {
            !self.smart
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchDefault {
    pub channel: String,
    pub model: String,
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
            simple_prompt_tokens: 0,
            switch: SwitchConfig::default(),
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
    /// More keys of the same account (after `api_key`, if set): each is tried,
    /// limited and taken out on its own.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// How requests spread over several keys: `round_robin` or `fill_first`.
    #[serde(default)]
    pub key_rotation: router_core::table::KeyRotation,
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
    /// Price adjustments in force at some times or past some use (an
    /// off-peak discount, a surcharge after a day's allowance).
    #[serde(default)]
    pub pricing_policies: Vec<PricingPolicy>,
    /// The provider's request limits on this channel's key (a free tier).
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// Alert when the account's balance (OpenRouter, DeepSeek, SiliconFlow)
    /// falls below this, in the provider's currency.
    #[serde(default)]
    pub low_balance: Option<f64>,
}

/// One of a channel's keys: the key (a string, usually `${ENV}`), or
/// `{id, key}` to name it (else it is named `key-` and 8 hex digits of its SHA-256).
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub key: String,
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            id: String,
            key: String,
        }
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ApiKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key, or {id, key}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ApiKey, E> {
                Ok(ApiKey { id: String::new(), key: v.to_string() })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ApiKey, A::Error> {
                Named::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|n| ApiKey { id: n.id, key: n.key })
            }
        }
        d.deserialize_any(Visit)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey").field("id", &self.id).finish()
    }
}

impl ChannelConfig {
    /// The key discovery and key checks use: `api_key`, else the first of `api_keys`.
    pub fn primary_key(&self) -> &str {
        if self.api_key.is_empty() {
            self.api_keys.first().map_or("", |k| k.key.as_str())
        } else {
            &self.api_key
        }
    }

    /// Every key with its id (`api_key` first), when there are several.
    pub fn keys(&self) -> Vec<(String, &str)> {
        let mut all: Vec<(String, &str)> = Vec::with_capacity(1 + self.api_keys.len());
        if !self.api_key.is_empty() {
            all.push((key_id(&self.api_key), &self.api_key));
        }
        all.extend(
            self.api_keys.iter().map(|k| (if k.id.is_empty() { key_id(&k.key) } else { k.id.clone() }, k.key.as_str())),
        );
        if all.len() < 2 {
            all.clear();
        }
        all
    }
}

/// A key's name where none is given: a fingerprint that does not reveal it.
pub fn key_id(key: &str) -> String {
    format!("key-{}", crate::secrets::digest(key.as_bytes()).get(..8).unwrap_or_default())
}

/// Request limits the router keeps to, so a free tier is used to its last
/// request and never answers 429.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per window (a minute unless `window_seconds` says otherwise).
    pub requests_per_minute: u32,
    pub window_seconds: f64,
    pub requests_per_day: u32,
    /// Prompt and completion tokens per window and per day, as providers report them.
    pub tokens_per_minute: u64,
    pub tokens_per_day: u64,
    /// The provider's day: it resets at `reset` (`HH:MM`) in this zone.
    pub timezone: String,
    pub reset: String,
    /// Also follow the provider's `x-ratelimit-*` headers.
    pub provider_headers: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 0,
            window_seconds: 60.0,
            requests_per_day: 0,
            tokens_per_minute: 0,
            tokens_per_day: 0,
            timezone: "UTC".into(),
            reset: "00:00".into(),
            provider_headers: true,
        }
    }
}

/// One price adjustment: `multiplier` applies to the channel's prices while the
/// policy is in force. A policy with both a time window and a threshold is in
/// force when both hold.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PricingPolicy {
    pub name: String,
    pub multiplier: f64,
    #[serde(default)]
    pub time_window: Option<TimeWindow>,
    /// In force once the channel's tokens today (in `statistics.timezone`) pass this.
    #[serde(default)]
    pub after_tokens_per_day: Option<u64>,
}

/// `from` to `to` (`HH:MM`, local time in `timezone`; past midnight when `to`
/// is earlier), on `days` (all days when empty).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub from: String,
    pub to: String,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub days: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
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
    /// Prompt tokens read from the provider's cache (default: the input price).
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's cache (default: the input price).
    pub cache_write: Option<f64>,
    pub multiplier: Option<f64>,
    pub models: BTreeMap<String, ModelPrice>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
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
