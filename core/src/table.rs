//! The channel table: the versioned contract between control plane and filter.
//!
//! The control plane builds a [`TableDoc`] from the YAML config and model discovery
//! and serves it as JSON. Filters (and the control plane itself, for `explain` and
//! listings) turn it into a [`Table`] with [`Table::compile`]: validated once, indexed
//! once, then shared read-only. A document that fails to compile never replaces a good
//! table: callers keep the last good one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::groups::{builtin_groups, name_capabilities, GroupDoc};
use crate::names::{core_name, is_non_chat, model_tags, size_facts};
use crate::query::{parse, Query};
use hashbrown::HashMap;

/// The contract version. A filter refuses a table with another schema rather than
/// misreading it; fields may be added within a schema (unknown fields are ignored).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableDoc {
    pub schema: u32,
    /// Content hash chosen by the control plane; equal content, equal version.
    pub version: String,
    #[serde(default)]
    pub routing: RoutingDoc,
    #[serde(default)]
    pub auth: AuthDoc,
    #[serde(default)]
    pub channels: Vec<ChannelDoc>,
    /// User groups; they replace built-in groups of the same name.
    #[serde(default)]
    pub groups: Vec<GroupDoc>,
    #[serde(default)]
    pub usage: UsageDoc,
    /// Spending limits, each with what the control plane has recorded against it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetDoc>,
}

/// A spending limit in the current period (the control plane moves periods).
/// The filter adds what its own Envoy spent and reserved since `as_of_ms` to
/// `spent_pico`, so requests in flight and those not yet reported count too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BudgetDoc {
    pub id: String,
    /// What it covers: everything, or the one channel, group (by the name a
    /// client asks for) or client token (by id) named here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Picodollars (1e-12 USD).
    pub limit_pico: u64,
    pub spent_pico: u64,
    /// When the control plane summed `spent_pico` (records reported by then).
    pub as_of_ms: u64,
    /// When the period ends (for the error's message).
    pub resets_ms: u64,
    /// Spent: refuse every request it covers (429), rather than serve what is
    /// free or local and refuse only what would be paid.
    pub refuse: bool,
}

impl BudgetDoc {
    /// Whether this budget covers an attempt on `channel` for a request that
    /// asked for `requested` with `token`.
    pub fn covers(&self, channel: &str, requested: &str, token: Option<&str>) -> bool {
        self.channel.as_deref().is_none_or(|c| c == channel)
            && self.group.as_deref().is_none_or(|g| g.eq_ignore_ascii_case(requested))
            && self.token.as_deref().is_none_or(|t| Some(t) == token)
    }
}

/// Usage accounting: a record per chat request, tokens and cost read from
/// every answer, and their stats. Off, the router only routes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct UsageDoc {
    pub enabled: bool,
    /// Output tokens a request that sets no `max_tokens` reserves against budgets.
    pub reserve_output_tokens: u64,
}

impl Default for UsageDoc {
    fn default() -> Self {
        Self { enabled: true, reserve_output_tokens: 1024 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RoutingDoc {
    /// Attempts after the first one; a plan holds at most `1 + max_retry_attempts`.
    pub max_retry_attempts: u32,
    /// Add `X-Router-*` headers to responses.
    pub debug_headers: bool,
    pub default_strategy: String,
    /// Circuit breaker and cooldowns.
    pub health: crate::health::Policy,
    /// Custom strategies by name (`routing.sorting_strategies`).
    pub strategies: BTreeMap<String, crate::score::Strategy>,
    /// Quality (0..=1) by model core name, overriding the size-based estimate.
    pub quality: BTreeMap<String, f64>,
    /// Filters for tag queries and groups (`routing.model_filters`); a model the
    /// client names is not filtered.
    pub filters: crate::groups::GroupFilters,
    /// Prompts of at most this many tokens (estimated) without tools, sent to
    /// an `auto:` group, are ranked by `cost_first` (0: off).
    pub simple_prompt_tokens: u64,
    /// Smart routing is switched off: every request goes to this group (the
    /// owner's fixed default), whatever it asks for.
    pub fixed_group: Option<String>,
}

impl Default for RoutingDoc {
    fn default() -> Self {
        Self {
            max_retry_attempts: 3,
            debug_headers: true,
            default_strategy: "cost_first".into(),
            health: crate::health::Policy::default(),
            strategies: BTreeMap::new(),
            quality: BTreeMap::new(),
            filters: crate::groups::GroupFilters::default(),
            simple_prompt_tokens: 0,
            fixed_group: None,
        }
    }
}

/// Client access: each client token by its SHA-256, so the table (and Envoy's
/// memory) never holds a client's token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthDoc {
    pub enabled: bool,
    pub tokens: Vec<TokenDoc>,
}

/// One client token and what it may use. Empty lists allow everything; each
/// list that is not empty must allow a candidate for the token to reach it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TokenDoc {
    /// The token's name in usage records and logs (never the token).
    pub id: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// Channel ids the token may reach.
    pub channels: Vec<String>,
    /// Tags a model must have (any one of them) for the token to reach it:
    /// the channel's tags and the model's own (`free` for a `:free` model).
    pub tags: Vec<String>,
    /// What `model` may say, exactly as the client writes it (a model, an
    /// alias, a group or a query).
    pub models: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<TokenLimits>,
}

/// How much a client token may ask for per window (0: no limit), counted
/// across Envoy's workers and, through the control plane, across Envoys.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TokenLimits {
    pub requests_per_window: u32,
    /// Prompt and completion tokens, as the providers reported them.
    pub tokens_per_window: u32,
    pub window_ms: u64,
}

/// The shared-state key of a client token's request count.
pub fn token_requests_key(id: &str) -> String {
    format!("@{id}")
}

/// The shared-state key of a client token's token count.
pub fn token_tokens_key(id: &str) -> String {
    format!("@{id} tokens")
}

/// A client token compiled against the table: which entries it may reach.
#[derive(Debug, Clone)]
pub struct ClientToken {
    pub id: String,
    pub limits: Option<TokenLimits>,
    /// Where its requests and tokens are counted (see [`token_requests_key`]).
    pub requests_key: String,
    pub tokens_key: String,
    hash: [u8; 32],
    models: Vec<String>,
    /// By entry index; `None`: every entry.
    entries: Option<Vec<bool>>,
}

impl ClientToken {
    /// Whether the token may name `model` in a request.
    pub fn may_request(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model.trim())
    }

    /// Whether the token may reach `channel`'s `model`.
    pub fn may_use(&self, table: &Table, channel: u32, model: &str) -> bool {
        let Some(allowed) = &self.entries else {
            return true;
        };
        table
            .entries_for_model(model)
            .iter()
            .find(|&&n| table.entry(n).is_some_and(|e| e.channel == channel))
            .is_some_and(|&n| allowed.get(n as usize).copied().unwrap_or(false))
    }

    /// Whether the token restricts anything.
    pub fn restricted(&self) -> bool {
        self.entries.is_some() || !self.models.is_empty()
    }
}

/// SHA-256 as lower-case hex: how a token is written in the table.
pub fn token_hash_hex(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.trim().as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo), Some(slot)) =
            (pair.first().and_then(|&c| nibble(c)), pair.get(1).and_then(|&c| nibble(c)), out.get_mut(i))
        else {
            return None;
        };
        *slot = hi << 4 | lo;
    }
    Some(out)
}

/// One provider account. `auth_value` is a provider secret: it is written only into
/// the upstream request and is redacted from `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelDoc {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub provider: String,
    /// The Envoy cluster that reaches this channel's base URL.
    pub cluster: String,
    /// `:authority` for upstream requests (host, with port when not the default).
    pub authority: String,
    /// Path of the base URL (`/v1`, `/openai/v1`, `/api/v3`); endpoints append to it.
    #[serde(default)]
    pub path_prefix: String,
    /// Header that carries the key (`authorization`), and its full value (`Bearer sk-...`).
    #[serde(default)]
    pub auth_header: String,
    #[serde(default)]
    pub auth_value: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lower is preferred.
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "yes")]
    pub healthy: bool,
    /// When the control plane last saw this channel's key accepted (ms since the
    /// epoch; 0: not yet). A channel that answered 401/403 comes back only after.
    #[serde(default)]
    pub key_ok_ms: u64,
    /// Models this channel serves, under the names its provider uses.
    #[serde(default)]
    pub models: Vec<ModelDoc>,
    /// Standard name a client may use -> the name this channel's provider expects.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Pricing policies in force (their multipliers are in the prices already).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pricing_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsDoc>,
    /// A channel with several keys: each is attempted on its own, with its own
    /// health and limits (kept under `<channel>/<key id>`), and `auth_value` is
    /// unused. In the order `fill_first` uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyDoc>,
    /// How requests spread over `keys`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub key_rotation: KeyRotation,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One of a channel's keys. `auth_value` is a provider secret, redacted from `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyDoc {
    /// Shown wherever the key would be (records, status, explain): never the key.
    pub id: String,
    pub auth_value: String,
    /// When the control plane last saw this key accepted (0: not yet).
    #[serde(default)]
    pub key_ok_ms: u64,
    /// False when the control plane found this key rejected: a last resort.
    #[serde(default = "yes")]
    pub healthy: bool,
}

impl fmt::Debug for KeyDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDoc").field("id", &self.id).finish()
    }
}

/// How a channel with several keys spreads its requests over them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyRotation {
    /// Each request leads with the next key.
    #[default]
    RoundRobin,
    /// The first key that is in until its limits or health take it out, then the next.
    FillFirst,
}

/// Request limits a provider puts on this channel's key (a free tier). The
/// router counts what it sends and leaves the channel out of plans at a limit,
/// before the provider would answer 429, until the window or the day resets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LimitsDoc {
    /// Requests per window (0: no limit); a window starts with its first request.
    pub requests_per_window: u32,
    pub window_ms: u64,
    /// Requests per day (0: no limit).
    pub requests_per_day: u32,
    /// When the current day began on the provider's clock; the control plane
    /// moves it at each reset, which starts a new count.
    pub day_start_ms: u64,
    /// Prompt and completion tokens per window and per day (0: no limit),
    /// counted as requests end.
    #[serde(skip_serializing_if = "is_default")]
    pub tokens_per_window: u64,
    #[serde(skip_serializing_if = "is_default")]
    pub tokens_per_day: u64,
    /// Read the provider's `x-ratelimit-remaining-requests` and
    /// `x-ratelimit-reset-requests` on this channel's answers: at 0 remaining,
    /// the channel rests until the reset.
    pub provider_headers: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl fmt::Debug for ChannelDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelDoc")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path_prefix", &self.path_prefix)
            .field("auth_value", &"<redacted>")
            .field("models", &self.models.len())
            .finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelDoc {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// What the provider says the model does (`tools`, `vision`, `embedding`, ...);
    /// empty when it does not say, and the name decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// USD per 1M tokens on this channel, multiplier applied (config, else provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_price: Option<f64>,
    /// USD per 1M prompt tokens read from the provider's cache, when it has a price of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_price: Option<f64>,
    /// USD per 1M prompt tokens written to the provider's cache (Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_price: Option<f64>,
}

/// A channel that can receive attempts: one per channel, or one per key of a
/// channel with several. Index into [`Table::channels`] is its handle.
#[derive(Clone, PartialEq)]
pub struct Channel {
    /// The channel's id (records, stats, token rules and queries name it).
    pub id: String,
    /// What health, limits and speed are kept under and attempts are named by:
    /// the channel id, or `<channel>/<key id>` for one of several keys.
    pub scope: String,
    /// The key's id, for a channel with several keys.
    pub key: Option<String>,
    /// The key's place in the channel's list, and whether the channel fills its
    /// keys in that order (rather than rotating over them).
    pub key_index: u32,
    pub fill_first: bool,
    pub name: String,
    pub provider: String,
    pub cluster: String,
    pub authority: String,
    pub path_prefix: String,
    pub auth_header: String,
    pub auth_value: String,
    pub tags: Vec<String>,
    pub priority: i32,
    pub weight: u32,
    pub healthy: bool,
    pub key_ok_ms: u64,
    pub limits: Option<LimitsDoc>,
}

impl Channel {
    /// The provider key itself (the auth header's value without its scheme), to
    /// mask it wherever a provider quotes it back.
    pub fn secret(&self) -> &str {
        let v = self.auth_value.as_str();
        match v.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => v.get(7..).unwrap_or_default().trim(),
            _ => v,
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("scope", &self.scope).field("cluster", &self.cluster).finish()
    }
}

/// One way to serve a requested name: a channel and the model name it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub channel: u32,
    pub upstream_model: String,
}

/// One model on one channel, with what routing needs to know about it. Entries are
/// numbered in preference order (channel priority, document order, model order), so
/// every index below lists them best first.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub channel: u32,
    /// The name the channel's provider uses.
    pub id: String,
    pub core: String,
    /// Sorted tag ids: the model name's tags and its channel's tags.
    pub tags: Vec<u32>,
    pub context_length: Option<u64>,
    pub params_b: Option<f64>,
    /// False for embedding, rerank, speech, image and moderation models.
    pub chat: bool,
    pub tools: bool,
    pub vision: bool,
    /// A `:free` variant, a free-tier channel, or a local one.
    pub free: bool,
    /// A local channel (Ollama, LM Studio): costs nothing.
    pub local: bool,
    /// From the known-models table; None: estimated from size.
    pub quality: Option<f64>,
    pub price_in: Option<f64>,
    pub price_out: Option<f64>,
    pub price_cached_in: Option<f64>,
    pub price_cache_write: Option<f64>,
    /// What a request costs here, in picodollars per token (`None`: not known).
    pub price: Option<crate::cost::Price>,
}

/// A group compiled against this table. Matching models are kept as entry
/// numbers: a group such as `auto:balanced` holds every chat model, and copying
/// names for each would dominate table build time on large tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub description: String,
    /// Explicit members, tried first, by priority.
    pub explicit: Vec<Candidate>,
    /// Matching entries, in preference order.
    pub entries: Vec<u32>,
    /// Its own strategy, if it has one.
    pub strategy: Option<crate::score::Strategy>,
}

impl Group {
    pub fn len(&self) -> usize {
        self.explicit.len() + self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members in order: explicit ones, then matching entries.
    pub fn candidates<'a>(&'a self, table: &'a Table) -> impl Iterator<Item = Candidate> + 'a {
        self.explicit.iter().cloned().chain(self.entries.iter().filter_map(|&n| table.candidate(n)))
    }
}

/// A compiled table: validated, indexed, with the bodies of `/v1/models` and
/// `/health` rendered once so the filter answers them without work per request.
#[derive(Debug, Clone)]
pub struct Table {
    pub version: String,
    pub routing: RoutingDoc,
    pub auth: AuthDoc,
    /// `auth.tokens` compiled.
    pub tokens: Vec<ClientToken>,
    /// Some channel has request limits (its counts must be fresh when planning).
    pub limited: bool,
    /// Some client token has rate limits.
    pub tokens_limited: bool,
    /// Some channel has several keys (its plans order them, see `plan`).
    pub multi_key: bool,
    pub usage: UsageDoc,
    pub budgets: Vec<BudgetDoc>,
    pub channels: Vec<Channel>,
    channel_index: HashMap<String, u32>,
    pub entries: Vec<ModelEntry>,
    tag_names: Vec<String>,
    tag_ids: HashMap<String, u32>,
    /// Tag id -> entries having it, ascending (= preference order).
    tag_index: Vec<Vec<u32>>,
    /// Physical model id -> entries.
    by_model: HashMap<String, Vec<u32>>,
    /// Core name -> chat entries.
    by_core: HashMap<String, Vec<u32>>,
    /// Alias (standard name) -> candidates on the channels that define it.
    by_alias: HashMap<String, Vec<Candidate>>,
    groups: BTreeMap<String, Group>,
    models_json: String,
    health_json: String,
    /// Channels the document named whose cluster this Envoy does not have.
    pub skipped_channels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TableError {}

/// Channel ids become Envoy cluster names and stat names: keep them to a safe alphabet.
pub fn valid_channel_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A header value written by the filter must not smuggle a second header.
fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Table {
    /// Parse and compile the JSON the control plane serves.
    pub fn from_json(bytes: &[u8], known_clusters: Option<&HashSet<String>>) -> Result<Self, TableError> {
        let doc: TableDoc =
            serde_json::from_slice(bytes).map_err(|e| TableError(format!("table is not valid JSON: {e}")))?;
        Self::compile(doc, known_clusters)
    }

    /// Validate and index a document. With `known_clusters`, channels whose cluster
    /// Envoy does not have are left out (sending an attempt to a missing cluster fails
    /// the whole request) and listed in `skipped_channels`.
    pub fn compile(doc: TableDoc, known_clusters: Option<&HashSet<String>>) -> Result<Self, TableError> {
        if doc.schema != SCHEMA {
            return Err(TableError(format!(
                "table schema {} is not supported (this filter reads {SCHEMA})",
                doc.schema
            )));
        }
        let mut seen = HashSet::new();
        for (i, c) in doc.channels.iter().enumerate() {
            let at = format!("channels[{i}] ({})", c.id);
            if !valid_channel_id(&c.id) {
                return Err(TableError(format!("{at}: id must be 1-64 characters of A-Z a-z 0-9 _ -")));
            }
            if !seen.insert(c.id.as_str()) {
                return Err(TableError(format!("{at}: duplicate channel id")));
            }
            if c.cluster.is_empty() || c.authority.is_empty() {
                return Err(TableError(format!("{at}: cluster and authority are required")));
            }
            for (what, v) in [
                ("authority", &c.authority),
                ("path_prefix", &c.path_prefix),
                ("auth_header", &c.auth_header),
                ("auth_value", &c.auth_value),
            ] {
                if !header_safe(v) {
                    return Err(TableError(format!("{at}: {what} has characters not allowed in a header")));
                }
            }
            if !c.path_prefix.is_empty() && !c.path_prefix.starts_with('/') {
                return Err(TableError(format!("{at}: path_prefix must start with '/'")));
            }
            let mut key_ids = HashSet::new();
            for k in &c.keys {
                if !valid_channel_id(&k.id) || !key_ids.insert(k.id.as_str()) {
                    return Err(TableError(format!(
                        "{at}: key ids must be unique, 1-64 characters of A-Z a-z 0-9 _ -"
                    )));
                }
                if !header_safe(&k.auth_value) {
                    return Err(TableError(format!("{at}: key {} has characters not allowed in a header", k.id)));
                }
            }
        }

        let mut budget_ids = HashSet::new();
        for b in &doc.budgets {
            if !valid_channel_id(&b.id) || !budget_ids.insert(b.id.as_str()) {
                return Err(TableError(format!("budget \"{}\": ids must be unique, 1-64 of A-Z a-z 0-9 _ -", b.id)));
            }
            if [&b.channel, &b.group, &b.token].iter().filter(|s| s.is_some()).count() > 1 {
                return Err(TableError(format!("budget {}: covers one channel, group or token at most", b.id)));
            }
        }

        // Preference order among channels: priority, then the order of the document.
        let mut order: Vec<usize> = (0..doc.channels.len()).collect();
        order.sort_by_key(|&i| (doc.channels[i].priority, i));

        let mut channels = Vec::new();
        let mut channel_index = HashMap::default();
        let mut skipped_channels = Vec::new();
        let mut interner = Interner::default();
        let mut facts_by_name: HashMap<&str, NameFacts> = HashMap::default();
        let mut alias_cores: Vec<(String, u32)> = Vec::new();
        let mut entries: Vec<ModelEntry> = Vec::new();
        let mut by_alias: HashMap<String, Vec<Candidate>> = HashMap::default();
        // One unit per channel, or per key of a channel with several; a channel's
        // keys stay together in its place.
        let units = order.iter().flat_map(|&i| {
            let keys = doc.channels[i].keys.len();
            (0..keys.max(1)).map(move |k| (i, (keys > 0).then_some(k)))
        });
        for (i, key) in units {
            let c = &doc.channels[i];
            if let Some(known) = known_clusters {
                if !known.contains(&c.cluster) {
                    if key.is_none_or(|k| k == 0) {
                        skipped_channels.push(c.id.clone());
                    }
                    continue;
                }
            }
            let key = key.and_then(|k| c.keys.get(k).map(|doc| (k, doc)));
            let handle = u32::try_from(channels.len()).map_err(|_| TableError("too many channels".into()))?;
            let channel_tags: Vec<String> =
                c.tags.iter().map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect();
            let channel_free = channel_tags.iter().any(|t| t == "free" || t == "local");
            let channel_local = channel_tags.iter().any(|t| t == "local");
            let channel_tag_ids: Vec<u32> = channel_tags.iter().map(|t| interner.id(t)).collect();
            // This channel's entries by model id, to attach alias names below.
            let mut own: HashMap<&str, usize> = HashMap::default();
            for m in &c.models {
                if own.contains_key(m.id.as_str()) {
                    continue;
                }
                if !facts_by_name.contains_key(m.id.as_str()) {
                    let f = name_facts(&m.id, &mut interner);
                    facts_by_name.insert(m.id.as_str(), f);
                }
                if let Some(f) = facts_by_name.get(m.id.as_str()) {
                    own.insert(m.id.as_str(), entries.len());
                    let mut e = model_entry(handle, m, f, &channel_tag_ids, channel_free);
                    e.local = channel_local;
                    entries.push(e);
                }
            }
            // An alias's standard name describes the model better than a provider's
            // endpoint id (`doubao-1.5-pro-256k` vs `ep-2025...`): its tags and core
            // name join the aliased model, which is added if the channel does not list it.
            for (standard, upstream) in &c.aliases {
                let named = name_facts(standard, &mut interner);
                let n = match own.get(upstream.as_str()) {
                    Some(&n) => n,
                    None => {
                        let m = ModelDoc {
                            id: upstream.clone(),
                            context_length: None,
                            capabilities: vec![],
                            ..ModelDoc::default()
                        };
                        let f = name_facts(upstream, &mut interner);
                        own.insert(upstream.as_str(), entries.len());
                        let mut e = model_entry(handle, &m, &f, &channel_tag_ids, channel_free);
                        e.local = channel_local;
                        entries.push(e);
                        entries.len() - 1
                    }
                };
                if let Some(e) = entries.get_mut(n) {
                    e.tags.extend_from_slice(&named.tags);
                    e.tags.sort_unstable();
                    e.tags.dedup();
                    e.context_length = e.context_length.or(named.context);
                    e.params_b = e.params_b.or(named.params_b);
                    e.quality = e.quality.or(named.quality);
                    e.free |= named.free_marker;
                    alias_cores.push((named.core, n as u32));
                }
            }
            for (standard, upstream) in &c.aliases {
                by_alias
                    .entry(standard.clone())
                    .or_default()
                    .push(Candidate { channel: handle, upstream_model: upstream.clone() });
            }
            let scope = match key {
                Some((_, k)) => format!("{}/{}", c.id, k.id),
                None => c.id.clone(),
            };
            channel_index.insert(scope.clone(), handle);
            channels.push(Channel {
                id: c.id.clone(),
                scope,
                key: key.map(|(_, k)| k.id.clone()),
                key_index: key.map_or(0, |(n, _)| n as u32),
                fill_first: c.key_rotation == KeyRotation::FillFirst,
                name: c.name.clone(),
                provider: c.provider.clone(),
                cluster: c.cluster.clone(),
                authority: c.authority.clone(),
                path_prefix: c.path_prefix.trim_end_matches('/').to_string(),
                auth_header: c.auth_header.to_ascii_lowercase(),
                auth_value: key.map_or_else(|| c.auth_value.clone(), |(_, k)| k.auth_value.clone()),
                tags: channel_tags,
                priority: c.priority,
                weight: c.weight.max(1),
                healthy: c.healthy && key.is_none_or(|(_, k)| k.healthy),
                key_ok_ms: key.map_or(c.key_ok_ms, |(_, k)| k.key_ok_ms),
                limits: c.limits,
            });
        }

        // Free and local models cost nothing whatever a price list says.
        for e in &mut entries {
            e.price = if e.free || e.local {
                Some(crate::cost::Price::FREE)
            } else {
                crate::cost::Price::from_per_million(e.price_in, e.price_out, e.price_cached_in, e.price_cache_write)
            };
        }

        let mut tag_index: Vec<Vec<u32>> = vec![Vec::new(); interner.names.len()];
        let mut by_model: HashMap<String, Vec<u32>> = HashMap::default();
        let mut by_core: HashMap<String, Vec<u32>> = HashMap::default();
        for (n, e) in entries.iter().enumerate() {
            let n = u32::try_from(n).map_err(|_| TableError("too many models".into()))?;
            for &t in &e.tags {
                if let Some(list) = tag_index.get_mut(t as usize) {
                    list.push(n);
                }
            }
            match by_model.get_mut(&e.id) {
                Some(list) => list.push(n),
                None => {
                    by_model.insert(e.id.clone(), vec![n]);
                }
            }
            if e.chat {
                match by_core.get_mut(&e.core) {
                    Some(list) => list.push(n),
                    None => {
                        by_core.insert(e.core.clone(), vec![n]);
                    }
                }
            }
        }

        for (core, n) in alias_cores {
            let chat = entries.get(n as usize).is_some_and(|e| e.chat);
            let list = by_core.entry(core).or_default();
            if chat && !list.contains(&n) {
                list.push(n);
                list.sort_unstable();
            }
        }

        let mut table = Self {
            version: doc.version,
            routing: doc.routing,
            usage: doc.usage,
            budgets: doc.budgets,
            auth: doc.auth,
            tokens: Vec::new(),
            limited: channels.iter().any(|c| c.limits.is_some()),
            tokens_limited: false,
            multi_key: channels.iter().any(|c| c.key.is_some()),
            channels,
            channel_index,
            entries,
            tag_names: interner.names,
            tag_ids: interner.ids,
            tag_index,
            by_model,
            by_core,
            by_alias,
            groups: BTreeMap::new(),
            models_json: String::new(),
            health_json: String::new(),
            skipped_channels,
        };
        let mut group_docs: BTreeMap<String, GroupDoc> =
            builtin_groups().into_iter().map(|g| (g.name.clone(), g)).collect();
        for g in doc.groups {
            group_docs.insert(g.name.to_ascii_lowercase(), g);
        }
        for (name, g) in group_docs {
            let (explicit, entries) = table.group_members(&g).map_err(|e| TableError(format!("group {name}: {e}")))?;
            table.groups.insert(
                name.clone(),
                Group { name, description: g.description, explicit, entries, strategy: g.strategy },
            );
        }
        table.tokens = table.compile_tokens()?;
        table.tokens_limited = table.tokens.iter().any(|t| t.limits.is_some());
        table.models_json = table.render_models();
        table.health_json =
            render_health(&table.version, &table.channels, table.by_model.len(), &table.routing.default_strategy);
        Ok(table)
    }

    fn compile_tokens(&self) -> Result<Vec<ClientToken>, TableError> {
        let mut out = Vec::with_capacity(self.auth.tokens.len());
        for t in &self.auth.tokens {
            let hash = hex32(&t.sha256)
                .ok_or_else(|| TableError(format!("client token {}: sha256 is not 64 hex digits", t.id)))?;
            let tags: Vec<Option<u32>> =
                t.tags.iter().map(|x| self.tag_ids.get(x.trim().to_ascii_lowercase().as_str()).copied()).collect();
            let entries = (!t.channels.is_empty() || !t.tags.is_empty()).then(|| {
                self.entries
                    .iter()
                    .map(|e| {
                        let channel_ok = t.channels.is_empty()
                            || self.channel(e.channel).is_some_and(|c| t.channels.contains(&c.id));
                        let tag_ok =
                            t.tags.is_empty() || tags.iter().flatten().any(|id| e.tags.binary_search(id).is_ok());
                        channel_ok && tag_ok
                    })
                    .collect()
            });
            if t.id.is_empty() || t.id.len() > 128 || !t.id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TableError(format!("client token id \"{}\" must be 1-128 visible ASCII characters", t.id)));
            }
            let limits = t.limits.filter(|l| l.requests_per_window > 0 || l.tokens_per_window > 0);
            if limits.is_some_and(|l| l.window_ms == 0) {
                return Err(TableError(format!("client token {}: limits need a window", t.id)));
            }
            out.push(ClientToken {
                id: t.id.clone(),
                limits,
                requests_key: token_requests_key(&t.id),
                tokens_key: token_tokens_key(&t.id),
                hash,
                models: t.models.clone(),
                entries,
            });
        }
        Ok(out)
    }

    /// The client token `presented` is, compared in constant time with every
    /// token (a refusal takes as long as an acceptance).
    pub fn client_token(&self, presented: &str) -> Option<&ClientToken> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = sha2::Sha256::digest(presented.trim().as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&digest)) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }

    /// A client token by its id.
    pub fn token_by_id(&self, id: &str) -> Option<&ClientToken> {
        self.tokens.iter().find(|t| t.id == id)
    }

    /// Members of a group: explicit ones first, then every chat entry the group admits.
    fn group_members(&self, g: &GroupDoc) -> Result<(Vec<Candidate>, Vec<u32>), String> {
        let mut explicit: Vec<&crate::groups::GroupMember> = g.members.iter().collect();
        explicit.sort_by_key(|m| m.priority);
        let mut out: Vec<Candidate> = Vec::new();
        for m in explicit {
            // A member on a channel this Envoy does not route to is skipped, not
            // fatal; a channel with several keys gives a candidate per key.
            for (handle, _) in self.channels.iter().enumerate().filter(|(_, c)| c.id == m.channel) {
                out.push(Candidate { channel: handle as u32, upstream_model: m.model.clone() });
            }
        }
        let mut entries = Vec::new();
        // A group of listed members and nothing else is just those members.
        if g.query.trim().is_empty() && !g.members.is_empty() && g.any_of.is_empty() {
            return Ok((out, entries));
        }
        let (include, exclude) = if g.query.trim().is_empty() {
            (Vec::new(), Vec::new())
        } else {
            match parse(&g.query).map_err(|e| e.0)? {
                Query::Tags { include, exclude } => (include, exclude),
                _ => return Err(format!("query \"{}\" must be a tag query (tag:a,b,!c)", g.query)),
            }
        };
        let ids = |tags: &[String]| -> Option<Vec<u32>> { tags.iter().map(|t| self.tag_ids.get(t).copied()).collect() };
        // A query naming a tag no model has yet admits nothing (the group fills as
        // channels start serving such models).
        let (Some(inc), exc) =
            (ids(&include), exclude.iter().filter_map(|t| self.tag_ids.get(t).copied()).collect::<Vec<_>>())
        else {
            return Ok((out, entries));
        };
        let any_tags: Vec<u32> = g.any_of.tags.iter().filter_map(|t| self.tag_ids.get(t.as_str()).copied()).collect();
        let f = &g.filters;
        for (n, e) in self.entries.iter().enumerate() {
            if !e.chat
                || !inc.iter().all(|t| e.tags.binary_search(t).is_ok())
                || exc.iter().any(|t| e.tags.binary_search(t).is_ok())
            {
                continue;
            }
            if !admits(f, e) {
                continue;
            }
            if !g.any_of.is_empty() {
                let by_tag = any_tags.iter().any(|t| e.tags.binary_search(t).is_ok());
                let by_min = g.any_of.min_parameter_count.is_some_and(|min| e.params_b.is_some_and(|p| p >= min));
                let by_max = g.any_of.max_parameter_count.is_some_and(|max| e.params_b.is_some_and(|p| p <= max));
                if !(by_tag || by_min || by_max) {
                    continue;
                }
            }
            // Entries are unique per (channel, model); only an explicit member can repeat one.
            if out.iter().any(|c| c.channel == e.channel && c.upstream_model == e.id) {
                continue;
            }
            entries.push(n as u32);
        }
        Ok((out, entries))
    }

    pub fn channel(&self, handle: u32) -> Option<&Channel> {
        self.channels.get(handle as usize)
    }

    /// A channel by its scope: its id, or `<channel>/<key id>` for one of several keys.
    pub fn channel_by_scope(&self, scope: &str) -> Option<(u32, &Channel)> {
        let handle = *self.channel_index.get(scope)?;
        Some((handle, self.channel(handle)?))
    }

    /// Entries serving this exact model id.
    pub fn entries_for_model(&self, model: &str) -> &[u32] {
        self.by_model.get(model).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Chat entries whose core name is `core`.
    pub fn entries_for_core(&self, core: &str) -> &[u32] {
        self.by_core.get(core).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn entry(&self, n: u32) -> Option<&ModelEntry> {
        self.entries.get(n as usize)
    }

    pub fn candidate(&self, n: u32) -> Option<Candidate> {
        self.entry(n).map(|e| Candidate { channel: e.channel, upstream_model: e.id.clone() })
    }

    /// The entry behind a candidate (none for an explicit group member the channel
    /// does not list).
    pub fn entry_for(&self, c: &Candidate) -> Option<&ModelEntry> {
        self.entries_for_model(&c.upstream_model).iter().filter_map(|&n| self.entry(n)).find(|e| e.channel == c.channel)
    }

    pub fn tag_id(&self, tag: &str) -> Option<u32> {
        self.tag_ids.get(tag).copied()
    }

    pub fn tag_name(&self, id: u32) -> &str {
        self.tag_names.get(id as usize).map(String::as_str).unwrap_or("")
    }

    /// Entries having this tag, in preference order.
    pub fn entries_with_tag(&self, id: u32) -> &[u32] {
        self.tag_index.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn tags(&self) -> &[String] {
        &self.tag_names
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn candidates_for_alias(&self, alias: &str) -> &[Candidate] {
        self.by_alias.get(alias).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `/v1/models`: physical models and aliases, then groups; the known tags go in
    /// the extension field `tags` (OpenAI clients ignore fields they do not know).
    fn render_models(&self) -> String {
        let mut ids: BTreeSet<&str> = self.by_model.keys().map(String::as_str).collect();
        ids.extend(self.by_alias.keys().map(String::as_str));
        let mut data: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "smart-router"}))
            .collect();
        for g in self.groups.values() {
            data.push(serde_json::json!({
                "id": g.name, "object": "model", "created": 0, "owned_by": "smart-router",
                "group": {"description": g.description, "members": g.len()},
            }));
        }
        let mut tags: Vec<&str> = self.tag_names.iter().map(String::as_str).collect();
        tags.sort_unstable();
        serde_json::json!({"object": "list", "data": data, "tags": tags}).to_string()
    }

    /// Body of `GET /v1/models`.
    pub fn models_json(&self) -> &str {
        &self.models_json
    }

    /// Body of `GET /health`.
    pub fn health_json(&self) -> &str {
        &self.health_json
    }
}

/// Whether a model passes group or routing filters.
pub fn admits(f: &crate::groups::GroupFilters, e: &ModelEntry) -> bool {
    let price = crate::score::blend(e.free || e.local, e.price_in, e.price_out);
    !(f.free_only && !e.free
        || f.max_cost_per_1k.is_some_and(|max| price.is_none_or(|p| p / 1000.0 > max))
        || f.min_context_length.is_some_and(|min| e.context_length.is_some_and(|c| c < min))
        || f.min_parameter_count.is_some_and(|min| e.params_b.is_none_or(|p| p < min))
        || f.max_parameter_count.is_some_and(|max| e.params_b.is_none_or(|p| p > max))
        || f.capabilities.iter().any(|c| match c.as_str() {
            "tools" => !e.tools,
            "vision" => !e.vision,
            _ => true,
        }))
}

#[derive(Default)]
struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, tag: &str) -> u32 {
        if let Some(&id) = self.ids.get(tag) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(tag.to_string());
        self.ids.insert(tag.to_string(), id);
        id
    }
}

/// What a model's name alone says; computed once per distinct name, since
/// aggregator channels list the same catalogue many times over.
struct NameFacts {
    tags: Vec<u32>,
    core: String,
    context: Option<u64>,
    params_b: Option<f64>,
    quality: Option<f64>,
    chat: bool,
    tools: bool,
    vision: bool,
    free_marker: bool,
}

fn name_facts(id: &str, interner: &mut Interner) -> NameFacts {
    let name_tags = model_tags(id);
    let mut tags: Vec<u32> = name_tags.iter().map(|t| interner.id(t)).collect();
    tags.sort_unstable();
    tags.dedup();
    let size = size_facts(id);
    let (tools, vision) = name_capabilities(&name_tags);
    let core = core_name(id);
    // The known-models table before what the name itself says.
    let known = crate::known::lookup(&core).unwrap_or_default();
    NameFacts {
        tags,
        context: known.context.or(size.context),
        params_b: known.params_b.or(size.params_b),
        quality: known.quality,
        core,
        chat: !is_non_chat(id),
        tools,
        vision,
        free_marker: name_tags.iter().any(|t| t == "free"),
    }
}

fn model_entry(channel: u32, m: &ModelDoc, facts: &NameFacts, channel_tags: &[u32], channel_free: bool) -> ModelEntry {
    let mut tags = facts.tags.clone();
    tags.extend_from_slice(channel_tags);
    tags.sort_unstable();
    tags.dedup();
    // What the provider says about the model beats what its name suggests.
    let said = |c: &str| m.capabilities.iter().any(|x| x.eq_ignore_ascii_case(c));
    let non_chat = ["embedding", "embeddings", "rerank", "tts", "stt", "image", "moderation"].iter().any(|c| said(c));
    ModelEntry {
        channel,
        id: m.id.clone(),
        core: facts.core.clone(),
        tags,
        context_length: m.context_length.or(facts.context),
        params_b: facts.params_b,
        chat: facts.chat && !non_chat,
        tools: if m.capabilities.is_empty() { facts.tools } else { said("tools") },
        vision: if m.capabilities.is_empty() { facts.vision } else { said("vision") },
        free: channel_free || facts.free_marker || (m.input_price == Some(0.0) && m.output_price == Some(0.0)),
        local: false,
        quality: facts.quality,
        price_in: m.input_price,
        price_out: m.output_price,
        price_cached_in: m.cached_input_price,
        price_cache_write: m.cache_write_price,
        price: None,
    }
}

fn render_health(version: &str, channels: &[Channel], models: usize, strategy: &str) -> String {
    let up = channels.iter().filter(|c| c.healthy).count();
    let status = if up > 0 { "ok" } else { "degraded" };
    serde_json::json!({
        "status": status,
        "table_version": version,
        "channels": {"total": channels.len(), "up": up, "down": channels.len() - up},
        "models": models,
        "strategy": strategy,
    })
    .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn channel(id: &str, priority: i32, models: &[&str]) -> ChannelDoc {
        ChannelDoc {
            id: id.into(),
            name: id.into(),
            provider: "openai".into(),
            cluster: format!("channel_{id}"),
            authority: "127.0.0.1:1".into(),
            path_prefix: "/v1".into(),
            auth_header: "authorization".into(),
            auth_value: format!("Bearer key-{id}"),
            tags: vec![],
            priority,
            weight: 1,
            healthy: true,
            key_ok_ms: 0,
            models: models
                .iter()
                .map(|m| ModelDoc {
                    id: (*m).into(),
                    context_length: None,
                    capabilities: vec![],
                    ..ModelDoc::default()
                })
                .collect(),
            aliases: BTreeMap::new(),
            keys: vec![],
            key_rotation: KeyRotation::default(),
            pricing_policies: vec![],
            limits: None,
        }
    }

    pub fn doc(channels: Vec<ChannelDoc>) -> TableDoc {
        TableDoc {
            schema: SCHEMA,
            version: "v1".into(),
            routing: RoutingDoc::default(),
            auth: AuthDoc::default(),
            channels,
            groups: vec![],
            usage: Default::default(),
            budgets: vec![],
        }
    }

    #[test]
    fn candidates_follow_priority_then_document_order() {
        let t = Table::compile(
            doc(vec![channel("a", 2, &["m"]), channel("b", 1, &["m"]), channel("c", 2, &["m", "n"])]),
            None,
        )
        .unwrap();
        let ids: Vec<&str> = t
            .entries_for_model("m")
            .iter()
            .map(|&n| t.channel(t.entry(n).unwrap().channel).unwrap().id.as_str())
            .collect();
        assert_eq!(ids, ["b", "a", "c"]);
        assert_eq!(t.entries_for_model("n").len(), 1);
        assert!(t.entries_for_model("zzz").is_empty());
    }

    #[test]
    fn rejects_bad_documents() {
        let mut d = doc(vec![channel("a", 1, &[]), channel("a", 1, &[])]);
        assert!(Table::compile(d.clone(), None).unwrap_err().0.contains("duplicate"));
        d.channels.pop();
        d.channels[0].auth_value = "Bearer x\r\nevil: 1".into();
        assert!(Table::compile(d.clone(), None).unwrap_err().0.contains("auth_value"));
        d.channels[0].auth_value = "Bearer x".into();
        d.schema = 99;
        assert!(Table::compile(d, None).unwrap_err().0.contains("schema"));
        assert!(Table::from_json(b"{not json", None).is_err());
    }

    #[test]
    fn unknown_clusters_are_skipped() {
        let known: HashSet<String> = ["channel_a".to_string()].into_iter().collect();
        let t = Table::compile(doc(vec![channel("a", 1, &["m"]), channel("b", 1, &["m"])]), Some(&known)).unwrap();
        assert_eq!(t.channels.len(), 1);
        assert_eq!(t.skipped_channels, vec!["b".to_string()]);
        assert_eq!(t.entries_for_model("m").len(), 1);
    }

    #[test]
    fn debug_never_prints_keys() {
        let d = doc(vec![channel("a", 1, &["m"])]);
        let t = Table::compile(d.clone(), None).unwrap();
        assert!(!format!("{d:?}").contains("key-a"));
        assert!(!format!("{t:?}").contains("key-a"));
        assert!(!t.models_json().contains("key-a"));
        assert!(!t.health_json().contains("key-a"));
    }

    #[test]
    fn listings_include_models_and_aliases() {
        let mut c = channel("a", 1, &["m1"]);
        c.aliases.insert("std-name".into(), "ep-123".into());
        let t = Table::compile(doc(vec![c]), None).unwrap();
        let v: serde_json::Value = serde_json::from_str(t.models_json()).unwrap();
        let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        // The alias target is routable by its own name too.
        assert_eq!(&ids[..3], ["ep-123", "m1", "std-name"]);
        assert!(ids.contains(&"auto:free"));
        assert_eq!(v["tags"], serde_json::json!(["123", "ep", "m1", "name", "std"]));
        let h: serde_json::Value = serde_json::from_str(t.health_json()).unwrap();
        assert_eq!(h["channels"]["up"], 1);
        assert_eq!(h["table_version"], "v1");
    }
}
