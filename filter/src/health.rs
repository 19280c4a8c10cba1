//! Channel health shared by every Envoy worker.
//!
//! One shared-data value (`sar.health`) holds the entries of channels that failed
//! recently; each worker keeps a decoded copy, refreshed on tick when its CAS token
//! changes. Attempts update it with compare-and-swap, and only when something
//! happened: a failure, or a success on a channel that has an entry. A healthy
//! request makes no health host call beyond reading its status.

use std::cell::RefCell;

use router_core::health::{ErrorClass, HealthMap, Policy, State};

use crate::{host, metrics, shared};

pub const HEALTH_KEY: &str = "sar.health";

thread_local! {
    static LOCAL: shared::Local<HealthMap> = RefCell::new((HealthMap::default(), None));
}

/// Re-read the shared map if another worker changed it.
pub fn refresh() {
    shared::refresh(HEALTH_KEY, &LOCAL, |_| {});
}

/// Run `f` on this worker's copy.
pub fn with<T>(f: impl FnOnce(&HealthMap) -> T) -> T {
    LOCAL.with(|l| f(&l.borrow().0))
}

fn update(change: impl FnMut(&mut HealthMap) -> bool) -> Option<HealthMap> {
    shared::update(HEALTH_KEY, &LOCAL, change)
}

/// One attempt's outcome on `channel`/`model`.
pub fn record(channel: &str, model: &str, class: Option<ErrorClass>, retry_after_ms: Option<u64>, policy: &Policy) {
    if class.is_none() && !with(|m| m.tracks(channel, model)) {
        return;
    }
    if class == Some(ErrorClass::Client) {
        return;
    }
    let now = host::now_ms();
    let key = HealthMap::scope_key(channel, model, class);
    let was_open = with(|m| m.entries.get(&key).is_some_and(|h| h.state == State::Open));
    let written = update(|m| m.record(channel, model, now, class, retry_after_ms, policy));
    if let Some(m) = written {
        let open = m.entries.get(&key).is_some_and(|h| h.state == State::Open);
        if open && !was_open {
            metrics::bump("channel", channel, "ejections", 1);
            host::log(
                proxy_wasm::types::LogLevel::Warn,
                &format!(
                    "smart-router: channel {channel} ({}) is out: {}",
                    if key == channel { "all models".to_string() } else { format!("model {model}") },
                    m.entries.get(&key).map(|h| h.reason.describe()).unwrap_or("")
                ),
            );
        }
    }
}

/// Mark half-open probes this worker is about to send.
pub fn start_probes(probes: &[(String, String)], policy: &Policy) {
    if probes.is_empty() {
        return;
    }
    let now = host::now_ms();
    update(|m| {
        let before = m.clone();
        for (channel, model) in probes {
            m.start_probe(channel, model, now, policy);
        }
        *m != before
    });
}
