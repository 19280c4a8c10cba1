//! `smart-router serve`: keep the published table in step with the config file and
//! with what each channel's `/models` says.
//!
//! One loop owns all state. It wakes on a timer (config file check, discovery due)
//! and on finished discoveries, rebuilds the table and publishes it only when it
//! compiles and its content changed. A bad config file keeps the last good table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use router_core::table::ModelDoc;
use router_core::{Table, TableDoc};
use tokio::sync::{mpsc, watch};

use crate::api::{self, ApiState, Command, Published};
use crate::config::{self, Config};
use crate::discovery::{self, cache};
use crate::secrets::Secrets;
use crate::table::{models_for, ChannelModels};

use super::Error;

/// Discovery state of one channel. Results are tied to the URL and key they were
/// fetched with: free and paid keys of one provider see different catalogues.
#[derive(Default)]
struct Discovery {
    fingerprint: String,
    /// Last successful list for `fingerprint`.
    models: Option<Vec<ModelDoc>>,
    last_error: Option<String>,
    last_attempt: Option<Instant>,
    in_flight: bool,
    /// When the provider last accepted the key (ms since the epoch).
    key_ok_ms: u64,
    /// The last check answered 401/403.
    key_rejected: bool,
    /// The last check got no answer or a 5xx.
    unreachable: bool,
    /// The account's balance, where the provider tells it.
    balance: Option<crate::discovery::balance::Balance>,
}

struct Done {
    channel: String,
    fingerprint: String,
    result: Result<Vec<ModelDoc>, discovery::DiscoveryError>,
    balance: Option<Result<discovery::balance::Balance, String>>,
}

/// How often budgets are summed from the records (and alerts looked for).
const BUDGET_INTERVAL: Duration = Duration::from_secs(1);

pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The control plane's state, owned by the serve loop.
struct ControlPlane {
    path: PathBuf,
    config: Config,
    config_text: String,
    /// The file as a value, what admin changes are laid over.
    file_value: serde_json::Value,
    /// Changes made through the admin API (kept in the store).
    overlays: crate::admin::Overlays,
    /// The file with the changes laid over it, before `${ENV}` substitution.
    effective: watch::Sender<Arc<crate::admin::Effective>>,
    secrets: Secrets,
    discovery: HashMap<String, Discovery>,
    published: watch::Sender<Option<Arc<Published>>>,
    channel_status: watch::Sender<serde_json::Value>,
    current: Option<TableDoc>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Built for the CA bundle and timeout it was made with; rebuilt when they change.
    client: Option<(String, u64, discovery::Client)>,
    /// Pricing policies in force per channel (with any policy at all).
    policies: HashMap<String, crate::pricing::InForce>,
    /// When each limited channel's provider day began (moved at its reset).
    day_starts: HashMap<String, u64>,
    /// Each channel's tokens today, for use-based policies, and when they were counted.
    tokens_today: HashMap<String, u64>,
    tokens_counted: Option<Instant>,
    /// Budgets with what the records say they spent, as the table carries them.
    budgets: Vec<router_core::table::BudgetDoc>,
    /// When budgets and alerts were last worked out.
    budgets_checked: Option<Instant>,
    /// Alerts this process has stored (or found stored).
    raised_alerts: std::collections::HashSet<String>,
    /// The channels' clusters served to Envoy, and when each may enter tables.
    clusters: crate::clusters::ClusterSet,
    clusters_tx: watch::Sender<Arc<crate::clusters::Served>>,
}

impl ControlPlane {
    fn discovery_client(&mut self) -> discovery::Client {
        let (ca, timeout) = (&self.config.server.ca_file, self.config.control_plane.discovery_timeout);
        if let Some((c, t, client)) = &self.client {
            if c == ca && *t == timeout {
                return client.clone();
            }
        }
        let client = discovery::Client::new(ca, Duration::from_secs(timeout));
        if let Some(problem) = client.ca_problem() {
            if self.config.channels.iter().any(|c| c.enabled && c.base_url.starts_with("https://")) {
                tracing::error!("{problem}: https channels cannot be checked");
            }
        }
        self.client = Some((ca.clone(), timeout, client.clone()));
        client
    }

    fn channel_models(&self) -> HashMap<String, ChannelModels> {
        self.config
            .channels
            .iter()
            .map(|c| {
                let state = self.discovery.get(&c.id).filter(|d| d.fingerprint == cache::fingerprint(c));
                let mut m = models_for(c, state.and_then(|d| d.models.as_ref()));
                m.key_ok_ms = state.map(|d| d.key_ok_ms).unwrap_or(0);
                m.key_rejected = state.is_some_and(|d| d.key_rejected);
                m.unreachable = state.is_some_and(|d| d.unreachable);
                (c.id.clone(), m)
            })
            .collect()
    }

    fn load_caches(&mut self) {
        let interval = self.check_interval().as_secs();
        let now = epoch_ms();
        for c in self.config.channels.iter().filter(|c| c.enabled) {
            let Some(entry) = cache::load(&self.config, c) else { continue };
            let age = Duration::from_millis(now.saturating_sub(entry.fetched_at_ms));
            if age.as_secs() >= interval {
                continue;
            }
            tracing::info!(
                "channel {}: {} models from the disk cache ({} s old)",
                c.id,
                entry.models.len(),
                age.as_secs()
            );
            let d = self.discovery.entry(c.id.clone()).or_default();
            d.fingerprint = entry.fingerprint;
            d.models = Some(entry.models);
            d.key_ok_ms = entry.key_ok_ms;
            // Due again when the cached result would have been refreshed.
            d.last_attempt = Instant::now().checked_sub(age).or(Some(Instant::now()));
        }
    }

    /// One `GET /models` serves discovery, health check and key validation: it runs
    /// as often as the most frequent of them asks.
    fn check_interval(&self) -> Duration {
        let cp = &self.config.control_plane;
        Duration::from_secs(cp.discovery_interval.min(cp.key_validation_interval).min(cp.health_check_interval))
    }

    /// Start discoveries (which also check keys and health) that are due; returns how many started.
    fn start_due_discoveries(&mut self) -> usize {
        let interval = self.check_interval();
        // A failed discovery is retried sooner than a successful one is refreshed.
        let retry = interval.min(Duration::from_secs(60));
        let client = self.discovery_client();
        let mut started = 0;
        // Channels that discover, and channels with a key to check.
        for c in self.config.channels.iter().filter(|c| c.enabled && (c.discover || !c.primary_key().is_empty())) {
            let fp = cache::fingerprint(c);
            let d = self.discovery.entry(c.id.clone()).or_default();
            if d.in_flight {
                continue;
            }
            let due = d.fingerprint != fp
                || match d.last_attempt {
                    None => true,
                    Some(t) => t.elapsed() >= if d.last_error.is_some() { retry } else { interval },
                };
            if !due {
                continue;
            }
            d.in_flight = true;
            d.last_attempt = Some(Instant::now());
            let channel = c.clone();
            let tx = self.done_tx.clone();
            let client = client.clone();
            tokio::task::spawn_blocking(move || {
                let result = client.discover(&channel);
                let balance = client.balance(&channel, epoch_ms());
                let _ = tx.send(Done { channel: channel.id.clone(), fingerprint: fp, result, balance });
            });
            started += 1;
        }
        started
    }

    fn apply(&mut self, done: Done) {
        let d = self.discovery.entry(done.channel.clone()).or_default();
        d.in_flight = false;
        match done.balance {
            Some(Ok(b)) => d.balance = Some(b),
            Some(Err(e)) if d.last_error.as_deref() != Some(e.as_str()) => {
                tracing::warn!("channel {}: balance unknown ({e})", done.channel);
            }
            _ => {}
        }
        match done.result {
            Ok(models) => {
                if d.last_error.take().is_some() || d.fingerprint != done.fingerprint {
                    tracing::info!("channel {}: discovered {} models, key accepted", done.channel, models.len());
                }
                d.fingerprint.clone_from(&done.fingerprint);
                d.key_ok_ms = epoch_ms();
                d.key_rejected = false;
                d.unreachable = false;
                let entry = cache::CachedDiscovery {
                    fingerprint: done.fingerprint.clone(),
                    fetched_at_ms: d.key_ok_ms,
                    key_ok_ms: d.key_ok_ms,
                    models,
                };
                cache::save(&self.config, &done.channel, &entry);
                d.models = Some(entry.models);
            }
            Err(err) => {
                let e = err.message;
                d.key_rejected = err.key_rejected;
                d.unreachable = err.unreachable;
                if d.fingerprint != done.fingerprint {
                    // A new URL or key: the old list says nothing about it.
                    d.fingerprint = done.fingerprint;
                    d.models = None;
                }
                if d.last_error.as_deref() != Some(e.as_str()) {
                    let fallback =
                        if d.models.is_some() { "keeping the last discovered list" } else { "using configured_models" };
                    tracing::warn!("channel {}: discovery failed ({e}); {fallback}", done.channel);
                }
                d.last_error = Some(e);
            }
        }
    }

    /// What `GET /admin/v1/channels` shows of each channel (never its key).
    fn update_status(&self) {
        let models = self.channel_models();
        let list: Vec<serde_json::Value> = self
            .config
            .channels
            .iter()
            .map(|c| {
                let d = self.discovery.get(&c.id);
                let m = models.get(&c.id);
                let state = if !c.enabled {
                    "disabled"
                } else if m.is_some_and(|m| m.key_rejected) && c.keys().is_empty() {
                    "key_rejected"
                } else if m.is_some_and(|m| m.unreachable) {
                    "unreachable"
                } else {
                    "ok"
                };
                serde_json::json!({
                    "id": c.id,
                    "name": c.name,
                    "provider": c.provider,
                    "base_url": c.base_url,
                    "enabled": c.enabled,
                    "state": state,
                    "models": m.map(|m| m.models.len()).unwrap_or(0),
                    "model_source": m.map(|m| m.source.as_str()),
                    "last_check_ms": d
                        .and_then(|d| d.last_attempt)
                        .map(|t| epoch_ms().saturating_sub(t.elapsed().as_millis() as u64)),
                    "last_error": d.and_then(|d| d.last_error.clone()),
                    "key_ok_ms": d.map(|d| d.key_ok_ms).filter(|&k| k > 0),
                    "key_rotation": (!c.keys().is_empty()).then_some(c.key_rotation),
                    "balance": d.and_then(|d| d.balance.clone()),
                    "low_balance": c.low_balance,
                    // The key check uses the first key; the others show what Envoy saw.
                    "keys": c.keys().into_iter().enumerate().map(|(n, (id, _))| serde_json::json!({
                        "id": id,
                        "key_rejected": n == 0 && m.is_some_and(|m| m.key_rejected),
                    })).collect::<Vec<_>>(),
                    "pricing_policies": self.policies.get(&c.id).map(|p| p.names.clone()).unwrap_or_default(),
                    "price_multiplier": self.policies.get(&c.id).map_or(1.0, |p| p.multiplier),
                    "limits": c.limits.as_ref().map(|l| serde_json::json!({
                        "requests_per_window": l.requests_per_minute,
                        "window_seconds": l.window_seconds,
                        "requests_per_day": l.requests_per_day,
                        "day_started_ms": self.day_starts.get(&c.id),
                        "provider_headers": l.provider_headers,
                    })),
                })
            })
            .collect();
        self.channel_status.send_replace(serde_json::Value::Array(list));
    }

    /// Whether `name` is a strategy this config knows, else why not.
    fn known_strategy(&self, name: &str) -> Result<(), String> {
        let known =
            router_core::score::BUILTIN.contains(&name) || self.config.routing.sorting_strategies.contains_key(name);
        if !known {
            let mut names: Vec<&str> = router_core::score::BUILTIN.to_vec();
            names.extend(self.config.routing.sorting_strategies.keys().map(String::as_str));
            return Err(format!("unknown strategy \"{name}\"; known: {}", names.join(", ")));
        }
        Ok(())
    }

    /// Turn smart routing on or off: it takes effect after the switch's delay,
    /// and not within its cooldown of the last change.
    async fn switch(
        &mut self,
        store: &crate::usage::Store,
        smart: bool,
        actor: &str,
    ) -> Result<u64, crate::api::SwitchRefused> {
        use crate::api::SwitchRefused;
        let sw = self.config.routing.switch.clone();
        let now = epoch_ms();
        if now < sw.since_ms {
            return Err(SwitchRefused::Pending { at_ms: sw.since_ms });
        }
        if sw.smart == smart {
            return Ok(sw.since_ms);
        }
        let free_at = sw.since_ms + (sw.cooldown_seconds * 1000.0) as u64;
        if now < free_at {
            return Err(SwitchRefused::Cooldown { until_ms: free_at });
        }
        let since_ms = now + (sw.delay_seconds * 1000.0) as u64;
        let patch = crate::admin::Ask::Patch(serde_json::json!({"switch": {"smart": smart, "since_ms": since_ms}}));
        self.change(store, crate::admin::Kind::Routing, "", patch, actor, Some("switch"))
            .await
            .map_err(SwitchRefused::Change)?;
        Ok(since_ms)
    }

    /// The config, its secrets and the effective value for the file and `overlays`.
    fn load_with(
        &self,
        file: &Config,
        overlays: &crate::admin::Overlays,
    ) -> Result<(Config, Secrets, serde_json::Value), String> {
        let effective = crate::admin::effective(&self.file_value, overlays);
        if overlays.is_empty() {
            let secrets = Secrets::of(file).map_err(|e| e.to_string())?;
            return Ok((file.clone(), secrets, effective));
        }
        let yaml = crate::admin::to_yaml(&effective)?;
        let label = format!("{} with the admin API's changes", self.path.display());
        let config = config::parse(&yaml, &label, &|name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
        let secrets = Secrets::of(&config).map_err(|e| e.to_string())?;
        Ok((config, secrets, effective))
    }

    /// Apply one admin API change: check it makes a config and a table, store it
    /// with its audit entry, then put it in force. Returns the object after it
    /// (keys masked; None once deleted).
    async fn change(
        &mut self,
        store: &crate::usage::Store,
        kind: crate::admin::Kind,
        name: &str,
        ask: crate::admin::Ask,
        actor: &str,
        action: Option<&'static str>,
    ) -> Result<Option<serde_json::Value>, crate::admin::ChangeError> {
        use crate::admin::{self, Ask, ChangeError};
        let current = self.effective.borrow().clone();
        let before = admin::object(&current.value, kind, name).cloned();
        let action = action.unwrap_or(ask.action());
        let ask = match ask {
            Ask::Create(mut d) => {
                admin::unmask(kind, &mut d, before.as_ref())?;
                Ask::Create(d)
            }
            Ask::Replace(mut d) => {
                admin::unmask(kind, &mut d, before.as_ref())?;
                Ask::Replace(d)
            }
            Ask::Patch(mut d) => {
                admin::unmask(kind, &mut d, before.as_ref())?;
                Ask::Patch(d)
            }
            Ask::Delete => Ask::Delete,
        };
        let stored = admin::apply_ask(&self.file_value, &self.overlays, kind, name, ask)?;
        let mut overlays = self.overlays.clone();
        match &stored {
            Some(c) => overlays.insert((kind, name.to_string()), c.clone()),
            None => overlays.remove(&(kind, name.to_string())),
        };
        let file = config::parse(&self.config_text, &self.path.display().to_string(), &|n| std::env::var(n).ok())
            .map_err(|e| ChangeError::Config(e.to_string()))?;
        let (config, secrets, effective) = self.load_with(&file, &overlays).map_err(ChangeError::Config)?;
        let doc = crate::table::build_with(
            &config,
            &self.channel_models(),
            &secrets.client_tokens,
            &self.policies,
            &self.day_starts,
            &self.budgets,
        );
        Table::compile(doc, None).map_err(|e| ChangeError::Config(format!("the table would not compile: {e}")))?;
        let after = admin::object(&effective, kind, name).cloned();
        let now = epoch_ms();
        let entry = admin::store::AuditEntry {
            id: admin::store::audit_id(now),
            at_ms: now,
            actor: actor.to_string(),
            action: action.to_string(),
            kind: kind.as_str().to_string(),
            name: name.to_string(),
            before: before.as_ref().map(|b| admin::masked(kind, b)),
            after: after.as_ref().map(|a| admin::masked(kind, a)),
        };
        store.admin_change(kind, name, stored.as_ref(), &entry).await.map_err(|e| ChangeError::Store(e.to_string()))?;
        tracing::info!("admin {actor}: {action} {} \"{name}\"", kind.as_str());
        self.overlays = overlays;
        self.config = config;
        self.secrets = secrets;
        self.effective.send_replace(Arc::new(admin::Effective::new(effective, &self.overlays)));
        self.refresh_clusters(false);
        self.publish("admin API change");
        Ok(entry.after)
    }

    /// Serve the config's clusters to Envoy (`settled`: usable in tables at once).
    fn refresh_clusters(&mut self, settled: bool) {
        match crate::envoy::channel_clusters(&self.config) {
            Ok(fresh) => {
                if self.clusters.update(fresh, Instant::now(), settled) {
                    self.clusters_tx.send_replace(self.clusters.served());
                }
            }
            Err(e) => tracing::error!("cannot make the channels' clusters, keeping the last ones: {e}"),
        }
    }

    /// Build, check and publish the table if its content changed.
    fn publish(&mut self, reason: &str) {
        self.update_status();
        // Channels whose clusters Envoy may not have yet wait (see `clusters`).
        let now = Instant::now();
        let waiting =
            |c: &config::ChannelConfig| c.enabled && !self.clusters.ready(&crate::table::cluster_name(&c.id), now);
        let ready_only;
        let config = if self.config.channels.iter().any(waiting) {
            let mut c = self.config.clone();
            c.channels.retain(|c| !waiting(c));
            ready_only = c;
            &ready_only
        } else {
            &self.config
        };
        let doc = crate::table::build_with(
            config,
            &self.channel_models(),
            &self.secrets.client_tokens,
            &self.policies,
            &self.day_starts,
            &self.budgets,
        );
        if self.current.as_ref().is_some_and(|c| c.version == doc.version) {
            return;
        }
        let table = match Table::compile(doc.clone(), None) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("built a table that does not compile, keeping the last good one: {e}");
                return;
            }
        };
        let json = match serde_json::to_vec(&doc) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot serialise the table: {e}");
                return;
            }
        };
        let models: usize = doc.channels.iter().map(|c| c.models.len()).sum();
        tracing::info!(
            "table {} published ({reason}): {} channels, {models} channel models",
            doc.version,
            doc.channels.len()
        );
        self.published.send_replace(Some(Arc::new(Published {
            version: doc.version.clone(),
            json: Bytes::from(json),
            table: Arc::new(table),
        })));
        self.current = Some(doc);
    }

    /// Work out the pricing policies in force; true when that changed.
    fn refresh_policies(&mut self) -> bool {
        let now = epoch_ms();
        let fresh: HashMap<String, crate::pricing::InForce> = self
            .config
            .channels
            .iter()
            .filter(|c| c.enabled && !c.pricing_policies.is_empty())
            .map(|c| {
                let tokens = self.tokens_today.get(&c.id).copied().unwrap_or(0);
                (c.id.clone(), crate::pricing::in_force(&c.pricing_policies, now, tokens))
            })
            .collect();
        if fresh == self.policies {
            return false;
        }
        for (id, p) in &fresh {
            if self.policies.get(id) != Some(p) {
                let names = if p.names.is_empty() { "no policy in force".to_string() } else { p.names.join(", ") };
                tracing::info!("channel {id}: prices x{} ({names})", p.multiplier);
            }
        }
        self.policies = fresh;
        true
    }

    /// Move limited channels' days at their providers' resets; true when one moved.
    fn refresh_day_starts(&mut self) -> bool {
        let fresh = crate::table::day_starts(&self.config, epoch_ms());
        if fresh == self.day_starts {
            return false;
        }
        for (id, start) in &fresh {
            if self.day_starts.get(id).is_some_and(|old| old != start) {
                tracing::info!("channel {id}: its provider's day reset; request counts start again");
            }
        }
        self.day_starts = fresh;
        true
    }

    /// Sum what each budget spent in its period; true when a sum changed.
    async fn refresh_budgets(&mut self, store: &crate::usage::Store) -> bool {
        self.budgets_checked = Some(Instant::now());
        let now = epoch_ms();
        let mut fresh = Vec::with_capacity(self.config.budgets.len());
        for b in &self.config.budgets {
            let span = crate::budgets::period(b, now);
            let spent = match crate::budgets::spent(store, b, &span).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("budget {}: cannot sum its spending ({e}); keeping the last sum", b.id);
                    match self.budgets.iter().find(|d| d.id == b.id) {
                        Some(d) => {
                            fresh.push(d.clone());
                            continue;
                        }
                        None => 0,
                    }
                }
            };
            // A sum that did not move keeps its time, so Envoy's own count since goes on.
            let same =
                self.budgets.iter().find(|d| d.id == b.id && d.spent_pico == spent && d.resets_ms == span.until_ms);
            fresh.push(match same {
                Some(d) => crate::budgets::doc(b, spent, d.as_of_ms, &span),
                None => crate::budgets::doc(b, spent, now, &span),
            });
        }
        if fresh == self.budgets {
            return false;
        }
        self.budgets = fresh;
        true
    }

    /// Raise what budgets, key checks and Envoy's health say the owner should know.
    async fn raise_alerts(&mut self, store: &crate::usage::Store, api: &ApiState) {
        let now = epoch_ms();
        let mut alerts: Vec<crate::alerts::Alert> = Vec::new();
        for (b, doc) in self.config.budgets.iter().zip(&self.budgets) {
            let since = crate::budgets::period(b, now).since_ms;
            alerts.extend(crate::alerts::for_budget(b, doc.spent_pico, since, now));
        }
        for c in self.config.channels.iter().filter(|c| c.enabled) {
            if let Some(d) = self.discovery.get(&c.id).filter(|d| d.key_rejected) {
                let message =
                    format!("{}: the provider rejects its key ({})", c.id, d.last_error.as_deref().unwrap_or("401"));
                alerts.push(crate::alerts::Alert {
                    id: format!("key_invalid:{}:{}", c.id, d.key_ok_ms),
                    kind: crate::alerts::Kind::KeyInvalid,
                    subject: c.id.clone(),
                    message,
                    raised_ms: now,
                    acked_ms: None,
                });
            }
        }
        for c in self.config.channels.iter().filter(|c| c.enabled) {
            let (Some(low), Some(b)) = (c.low_balance, self.discovery.get(&c.id).and_then(|d| d.balance.as_ref()))
            else {
                continue;
            };
            if b.amount < low {
                // One alert a day while it stays low.
                alerts.push(crate::alerts::Alert {
                    id: format!("low_balance:{}:{}", c.id, b.checked_ms / 86_400_000),
                    kind: crate::alerts::Kind::LowBalance,
                    subject: c.id.clone(),
                    message: format!("{}: balance {} {} is below {low}", c.id, b.amount, b.currency),
                    raised_ms: now,
                    acked_ms: None,
                });
            }
        }
        let (health, _) = api.health();
        alerts.extend(crate::alerts::for_health(&self.config, &health, now));
        if !alerts.is_empty() {
            let webhook = self.config.alerts.webhook_url.clone();
            crate::alerts::raise(store, &webhook, alerts, &mut self.raised_alerts).await;
        }
    }

    /// Whether use-based policies need today's token counts again (every 10 s).
    fn tokens_due(&self) -> bool {
        self.config.channels.iter().any(|c| c.pricing_policies.iter().any(|p| p.after_tokens_per_day.is_some()))
            && self.tokens_counted.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
    }

    fn check_config_file(&mut self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return false;
        };
        if text == self.config_text {
            return false;
        }
        let file = self.path.display().to_string();
        let version = self.current.as_ref().map(|c| c.version.clone()).unwrap_or_default();
        // Remember the text even when it is bad, so the error is logged once.
        self.config_text = text.clone();
        let loaded = config::parse(&text, &file, &|name| std::env::var(name).ok()).and_then(|c| {
            Secrets::of(&c).map(|s| (c, s)).map_err(|e| config::ConfigError {
                file: file.clone(),
                path: String::new(),
                message: e.to_string(),
            })
        });
        // The file is checked on its own first, so its errors name its own lines.
        let loaded = loaded.and_then(|(file_config, _)| {
            let value = crate::admin::file_value(&text).map_err(|message| config::ConfigError {
                file: file.clone(),
                path: String::new(),
                message,
            })?;
            // The new file counts only once it loads with the changes over it.
            let previous = std::mem::replace(&mut self.file_value, value);
            self.load_with(&file_config, &self.overlays).map_err(|message| {
                self.file_value = previous;
                config::ConfigError {
                    file: format!("{file} with the admin API's changes"),
                    path: String::new(),
                    message,
                }
            })
        });
        match loaded {
            Ok((config, secrets, effective)) => {
                self.effective.send_replace(Arc::new(crate::admin::Effective::new(effective, &self.overlays)));
                if secrets.table_token != self.secrets.table_token {
                    tracing::warn!("control_plane.table_token changed: re-render the Envoy config and restart Envoy, or it can no longer fetch tables");
                }
                warn_on_envoy_changes(&self.config, &config);
                self.config = config;
                self.secrets = secrets;
                true
            }
            Err(e) => {
                tracing::error!("config rejected, keeping table {version}: {e}");
                false
            }
        }
    }
}

/// Things neither a table nor cluster discovery can change: Envoy's listeners
/// and limits come from render-envoy.
fn warn_on_envoy_changes(old: &Config, new: &Config) {
    let fixed = |s: &config::ServerConfig| (s.listen.clone(), s.admin.clone(), s.max_body_bytes, s.concurrency);
    if fixed(&old.server) != fixed(&new.server) {
        tracing::warn!(
            "server.listen, admin, max_body_bytes or concurrency changed: re-render the Envoy config and \
             restart Envoy for those to take effect"
        );
    }
}

/// Run the control plane until SIGTERM or Ctrl-C.
pub async fn serve(path: PathBuf) -> Result<(), Error> {
    let config = config::load(&path)?;
    let config_text = std::fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let secrets = Secrets::of(&config)?;
    let listen = config.control_plane.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| Error::Listen { address: listen.clone(), source })?;

    let (published, table_rx) = watch::channel(None);
    let (channel_status, channels_rx) = watch::channel(serde_json::Value::Array(vec![]));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
    let (clusters_tx, clusters_rx) = watch::channel(Arc::new(crate::clusters::Served::default()));
    // The store holds the admin API's changes, laid over the file from the start.
    let store = Arc::new(crate::usage::Store::open(&config.storage.url, &config.control_plane.data_dir).await?);
    let overlays = store.admin_objects().await?;
    let file_value = crate::admin::file_value(&config_text).map_err(|message| config::ConfigError {
        file: path.display().to_string(),
        path: String::new(),
        message,
    })?;
    let (effective_tx, effective_rx) =
        watch::channel(Arc::new(crate::admin::Effective::new(file_value.clone(), &Default::default())));
    let mut cp = ControlPlane {
        path: path.clone(),
        config: config.clone(),
        config_text,
        file_value,
        overlays,
        effective: effective_tx,
        secrets,
        discovery: HashMap::new(),
        published,
        channel_status,
        current: None,
        done_tx,
        client: None,
        policies: HashMap::new(),
        day_starts: HashMap::new(),
        tokens_today: HashMap::new(),
        tokens_counted: None,
        budgets: Vec::new(),
        budgets_checked: None,
        raised_alerts: Default::default(),
        clusters: Default::default(),
        clusters_tx,
    };
    match cp.load_with(&config, &cp.overlays) {
        Ok((config, secrets, effective)) => {
            if !cp.overlays.is_empty() {
                tracing::info!("{} changes made through the admin API apply over the file", cp.overlays.len());
            }
            cp.config = config;
            cp.secrets = secrets;
            cp.effective.send_replace(Arc::new(crate::admin::Effective::new(effective, &cp.overlays)));
        }
        // Keep serving: the file alone is the last config known to load.
        Err(e) => {
            tracing::error!("the admin API's stored changes do not load over the file, serving the file alone: {e}")
        }
    }
    // Envoy takes no request before its first clusters: these are usable at once.
    cp.refresh_clusters(true);

    let timezone = jiff::tz::TimeZone::get(&cp.config.statistics.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    cp.refresh_policies();
    // Channels with a fresh enough disk cache start from it, without calling /models.
    cp.load_caches();
    // First discovery round before the first table, bounded by the discovery timeout.
    let mut pending = cp.start_due_discoveries();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cp.config.control_plane.discovery_timeout + 1);
    while pending > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(done)) => {
                cp.apply(done);
                pending -= 1;
            }
            _ => break,
        }
    }
    cp.refresh_day_starts();
    cp.refresh_budgets(&store).await;
    cp.publish("start");
    if let Some(doc) = &cp.current {
        eprintln!("{}", super::summary(&path, &cp.config, doc, &cp.channel_models()));
    }

    spawn_retention(store.clone(), &cp.config.storage, timezone.clone());
    let counts = store.clone();
    let state = Arc::new(ApiState {
        table: table_rx,
        table_token: cp.secrets.table_token.clone(),
        admin_tokens: cp.secrets.admin_tokens.clone(),
        channels: channels_rx,
        reports: std::sync::Mutex::new(Default::default()),
        commands,
        store,
        timezone: timezone.clone(),
        clusters: clusters_rx,
        cds_rejected: Default::default(),
        effective: effective_rx,
    });
    let reported = state.clone();
    tokio::spawn(api::serve(listener, state));
    tracing::info!("control plane listening on {listen}");

    let mut tick = tokio::time::interval(Duration::from_millis(cp.config.control_plane.reload_poll_ms));
    let mut settling = false;
    let mut smart_now = cp.config.routing.switch.smart_at(epoch_ms());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let changed = cp.check_config_file();
                if changed {
                    cp.refresh_clusters(false);
                }
                if cp.clusters.expire(Instant::now()) {
                    cp.clusters_tx.send_replace(cp.clusters.served());
                }
                // A switch asked with a delay takes effect in the table on time.
                let smart = cp.config.routing.switch.smart_at(epoch_ms());
                let switched = std::mem::replace(&mut smart_now, smart) != smart;
                // A new channel enters the table once Envoy has its cluster.
                let was_settling = std::mem::replace(&mut settling, cp.clusters.settling(Instant::now()));
                cp.start_due_discoveries();
                if cp.tokens_due() {
                    let day = crate::usage::stats::current(crate::usage::stats::Period::Day, epoch_ms(), &timezone);
                    let by_channel = Some(crate::usage::Dimension::Channel);
                    if let Ok(rows) = counts.totals(day.since_ms, day.until_ms, by_channel).await {
                        cp.tokens_today = rows
                            .into_iter()
                            .filter_map(|t| Some((t.key?, t.prompt_tokens + t.completion_tokens)))
                            .collect();
                    }
                    cp.tokens_counted = Some(Instant::now());
                }
                let priced = cp.refresh_policies();
                let new_day = cp.refresh_day_starts();
                let mut spent = false;
                if cp.budgets_checked.is_none_or(|t| t.elapsed() >= BUDGET_INTERVAL) {
                    spent = cp.refresh_budgets(&counts).await;
                    cp.raise_alerts(&counts, &reported).await;
                }
                if changed {
                    cp.publish("config changed");
                } else if switched {
                    cp.publish("routing switch");
                } else if settling || was_settling {
                    cp.publish("new channels' clusters reached Envoy");
                } else if priced {
                    cp.publish("pricing policy");
                } else if new_day {
                    cp.publish("a provider's day reset");
                } else if spent {
                    cp.publish("budgets spent");
                }
            }
            Some(done) = done_rx.recv() => {
                cp.apply(done);
                cp.publish("discovery");
            }
            Some(command) = command_rx.recv() => match command {
                Command::Change { kind, name, ask, actor, reply } => {
                    let done = cp.change(&counts, kind, &name, ask, &actor, None).await;
                    let _ = reply.send(done);
                }
                Command::Switch { smart, actor, reply } => {
                    let _ = reply.send(cp.switch(&counts, smart, &actor).await);
                }
                Command::SetStrategy { name, actor, reply } => {
                    let done = match cp.known_strategy(&name) {
                        Ok(()) => {
                            let patch = crate::admin::Ask::Patch(serde_json::json!({"default_strategy": name}));
                            cp.change(&counts, crate::admin::Kind::Routing, "", patch, &actor, None)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                        Err(why) => Err(why),
                    };
                    let _ = reply.send(done);
                }
            },
            _ = shutdown_signal() => {
                tracing::info!("control plane stopping");
                return Ok(());
            }
        }
    }
}

/// Delete records past `storage.retention_days`, at start and once a day.
fn spawn_retention(store: Arc<crate::usage::Store>, storage: &config::StorageConfig, tz: jiff::tz::TimeZone) {
    let days = storage.retention_days;
    if days == 0 {
        return;
    }
    let archive = (!storage.archive_dir.is_empty()).then(|| PathBuf::from(&storage.archive_dir));
    tokio::spawn(async move {
        let mut every_hour = tokio::time::interval(Duration::from_secs(3_600));
        loop {
            every_hour.tick().await;
            match crate::usage::export::retain(&store, days, archive.as_deref(), &tz, epoch_ms()).await {
                Ok(done) => {
                    for path in &done.archived {
                        tracing::info!("retention: archived {}", path.display());
                    }
                    if done.deleted > 0 {
                        tracing::info!("retention: deleted {} usage records older than {days} days", done.deleted);
                    }
                }
                Err(e) => tracing::warn!("retention: {e}"),
            }
        }
    });
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
