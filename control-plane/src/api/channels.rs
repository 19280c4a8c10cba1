//! `GET /admin/v1/channels`: each channel's discovery, key and health-check
//! state, joined with the breakers and request counts Envoy reported (scope,
//! state, reason, cooldown end), per key for a channel with several. Never a key.

use axum::extract::State;
use axum::Json;
use router_core::health::HealthMap;
use serde_json::Value;

use super::{ApiState, State as SharedState};

pub async fn list(State(state): State<SharedState>) -> Json<Value> {
    Json(report(&state))
}

/// The serve loop's channel states joined with the breakers Envoy reported.
fn report(state: &ApiState) -> Value {
    let now = crate::commands::serve::epoch_ms();
    let mut channels = state.channels.borrow().clone();
    let (health, reported_at) = state.health();
    if let Some(list) = channels.as_array_mut() {
        for ch in list {
            let id = ch["id"].as_str().unwrap_or_default().to_string();
            let limits = ch.get("limits").cloned().filter(Value::is_object);
            let mut keys_out = 0;
            if let Some(keys) = ch.get_mut("keys").and_then(Value::as_array_mut) {
                for key in keys.iter_mut() {
                    let scope = format!("{id}/{}", key["id"].as_str().unwrap_or_default());
                    let breakers = breakers(&health, &scope, now);
                    let out = is_out(&breakers);
                    keys_out += usize::from(out);
                    let rejected = key["key_rejected"].as_bool().unwrap_or(false);
                    keys_out += usize::from(rejected && !out);
                    key["state"] = Value::from(if out {
                        "out"
                    } else if rejected {
                        "key_rejected"
                    } else {
                        "ok"
                    });
                    key["breakers"] = Value::Array(breakers);
                    if let Some(l) = &limits {
                        key["limits"] = counted(&health, &scope, l.clone(), now);
                    }
                }
                let all_out = keys_out > 0 && keys_out == keys.len();
                if all_out {
                    ch["state"] = Value::from("out");
                }
            }
            let breakers = breakers(&health, &id, now);
            if let Some(l) = limits {
                ch["limits"] = counted(&health, &id, l, now);
            }
            if is_out(&breakers) {
                ch["state"] = Value::from("out");
            }
            ch["breakers"] = Value::Array(breakers);
        }
    }
    serde_json::json!({"channels": channels, "health_reported_at_ms": reported_at})
}

/// The breakers kept under `scope` (a channel, or one of its keys) and its models.
fn breakers(health: &HealthMap, scope: &str, now: u64) -> Vec<Value> {
    use router_core::health::State;
    health
        .entries
        .iter()
        .filter(|(k, _)| k.as_str() == scope || k.strip_prefix(scope).is_some_and(|rest| rest.starts_with(' ')))
        .map(|(k, h)| {
            let state = match h.state {
                State::Closed => "closed",
                State::Open if now >= h.until_ms => "half_open_due",
                State::Open => "open",
                State::HalfOpen => "half_open",
            };
            serde_json::json!({
                "scope": if k == scope { "channel".to_string() } else { k[scope.len() + 1..].to_string() },
                "state": state,
                "reason": h.reason.describe(),
                "since_ms": h.since_ms,
                "cooldown_until_ms": if h.state == State::Closed { None } else { Some(h.until_ms) },
                "failures_in_window": h.failures,
            })
        })
        .collect()
}

fn is_out(breakers: &[Value]) -> bool {
    breakers.iter().any(|b| b["scope"] == "channel" && b["state"] == "open")
}

/// `limits` with what Envoy counted under `scope`: the current window's and day's requests.
fn counted(health: &HealthMap, scope: &str, mut limits: Value, now: u64) -> Value {
    let Some(l) = limits.as_object_mut() else { return limits };
    let w = health.windows.get(scope).copied().unwrap_or_default();
    let day_started = l.get("day_started_ms").and_then(Value::as_u64);
    let window_ms = l.get("window_seconds").and_then(Value::as_f64).unwrap_or(60.0) * 1000.0;
    let in_window = if now < w.start_ms.saturating_add(window_ms as u64) { w.count } else { 0 };
    let today = if day_started == Some(w.day_start_ms) { w.day_count } else { 0 };
    l.insert("requests_in_window".into(), in_window.into());
    l.insert("window_started_ms".into(), w.start_ms.into());
    l.insert("requests_today".into(), today.into());
    limits
}
