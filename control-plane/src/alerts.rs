//! Alerts: what the owner should know about (a budget at its threshold or
//! spent, a key the provider rejects, a free tier used up, a failing channel).
//! The control plane raises them from what it sums and from the health Envoy
//! reports. Each is kept once in the store (its id names what and when, so a
//! condition that lasts is one alert), logged, listed and acknowledged through
//! the admin API, and optionally POSTed to a webhook.

use std::collections::HashSet;
use std::time::Duration;

use router_core::health::{HealthMap, Reason, State};
use serde::Serialize;

use crate::config::{BudgetConfig, Config};
use crate::usage::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    BudgetThreshold,
    BudgetExceeded,
    KeyInvalid,
    LimitReached,
    ChannelFailing,
    LowBalance,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BudgetThreshold => "budget_threshold",
            Kind::BudgetExceeded => "budget_exceeded",
            Kind::KeyInvalid => "key_invalid",
            Kind::LimitReached => "limit_reached",
            Kind::ChannelFailing => "channel_failing",
            Kind::LowBalance => "low_balance",
            Kind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Self {
        [
            Kind::BudgetThreshold,
            Kind::BudgetExceeded,
            Kind::KeyInvalid,
            Kind::LimitReached,
            Kind::ChannelFailing,
            Kind::LowBalance,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .unwrap_or(Kind::Other)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `<kind>:<subject>:<when the condition began>`: the same condition is one alert.
    pub id: String,
    pub kind: Kind,
    /// The budget, channel or key (by id) it is about.
    pub subject: String,
    pub message: String,
    pub raised_ms: u64,
    pub acked_ms: Option<u64>,
}

impl Alert {
    fn new(kind: Kind, subject: &str, since_ms: u64, message: String, now_ms: u64) -> Self {
        Self {
            id: format!("{kind}:{subject}:{since_ms}"),
            kind,
            subject: subject.to_string(),
            message,
            raised_ms: now_ms,
            acked_ms: None,
        }
    }
}

/// A budget's alerts at `spent` of its limit in the period that began at `since_ms`.
pub fn for_budget(b: &BudgetConfig, spent_pico: u64, since_ms: u64, now_ms: u64) -> Option<Alert> {
    let limit = crate::budgets::limit_pico(b);
    let usd = |p: u64| router_core::cost::usd_text(p);
    let what = match (&b.channel, &b.group, &b.token) {
        (Some(c), _, _) => format!(" (channel {c})"),
        (_, Some(g), _) => format!(" (group {g})"),
        (_, _, Some(t)) => format!(" (token {t})"),
        _ => String::new(),
    };
    if spent_pico >= limit {
        let then = match b.when_exceeded {
            crate::config::WhenExceeded::FreeOnly => "only free and local channels serve what it covers",
            crate::config::WhenExceeded::Refuse => "requests it covers are refused",
        };
        let message = format!("budget {}{what} is spent: {} of {} USD; {then}", b.id, usd(spent_pico), usd(limit));
        return Some(Alert::new(Kind::BudgetExceeded, &b.id, since_ms, message, now_ms));
    }
    let threshold = (limit as f64 * b.alert_at) as u64;
    (spent_pico >= threshold && spent_pico > 0).then(|| {
        let message = format!(
            "budget {}{what} is at {:.0}%: {} of {} USD",
            b.id,
            spent_pico as f64 * 100.0 / limit.max(1) as f64,
            usd(spent_pico),
            usd(limit)
        );
        Alert::new(Kind::BudgetThreshold, &b.id, since_ms, message, now_ms)
    })
}

/// Alerts in the health Envoy reported: keys taken out, channels failing,
/// limits reached.
pub fn for_health(config: &Config, health: &HealthMap, now_ms: u64) -> Vec<Alert> {
    let mut out = Vec::new();
    for (scope, h) in &health.entries {
        if h.state != State::Open || now_ms >= h.until_ms {
            continue;
        }
        let (kind, message) = match h.reason {
            Reason::KeyInvalid => (Kind::KeyInvalid, format!("{scope}: the provider rejects the key (401/403)")),
            Reason::Failing => {
                (Kind::ChannelFailing, format!("{scope}: failing; out of plans until its cooldown ends"))
            }
            _ => continue,
        };
        out.push(Alert::new(kind, scope, h.since_ms, message, now_ms));
    }
    for (scope, w) in &health.windows {
        let channel = scope.split('/').next().unwrap_or(scope);
        let Some(limits) = config.channels.iter().find(|c| c.id == channel).and_then(|c| c.limits.as_ref()) else {
            continue;
        };
        let window_ms = (limits.window_seconds * 1000.0) as u64;
        if limits.requests_per_minute > 0
            && w.count >= limits.requests_per_minute
            && now_ms < w.start_ms.saturating_add(window_ms)
        {
            let message = format!("{scope}: its free window of {} requests is used up", limits.requests_per_minute);
            out.push(Alert::new(Kind::LimitReached, scope, w.start_ms, message, now_ms));
        }
        if limits.requests_per_day > 0 && w.day_count >= limits.requests_per_day {
            let message = format!("{scope}: its {} requests for the day are used up", limits.requests_per_day);
            out.push(Alert::new(Kind::LimitReached, scope, w.day_start_ms, message, now_ms));
        }
    }
    out
}

/// Keep each alert that is new, log it and post it to the webhook. `raised`
/// holds the ids this process already stored, so a lasting condition costs no
/// write a second.
pub async fn raise(store: &Store, webhook_url: &str, alerts: Vec<Alert>, raised: &mut HashSet<String>) {
    for alert in alerts {
        if raised.contains(&alert.id) {
            continue;
        }
        match store.raise_alert(&alert).await {
            Ok(new) => {
                raised.insert(alert.id.clone());
                if !new {
                    continue;
                }
                tracing::warn!("alert {}: {}", alert.kind, alert.message);
                if !webhook_url.is_empty() {
                    post(webhook_url.to_string(), alert);
                }
            }
            Err(e) => tracing::warn!("cannot store alert {}: {e}", alert.id),
        }
    }
}

/// POST the alert as JSON, once, in the background; a failure is logged.
fn post(url: String, alert: Alert) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().new_agent();
        // (The URL may hold a token: it is not logged.)
        if let Err(e) = agent.post(&url).send_json(&alert) {
            tracing::warn!("alert webhook: {e}");
        }
    });
}
