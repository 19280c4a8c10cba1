//! `GET /admin/v1/channels`: each channel's discovery, key and health-check
//! state, joined with the breakers Envoy reported (scope, state, reason,
//! cooldown end). Never a key.

use axum::extract::State;
use axum::Json;

use super::{ApiState, State as SharedState};

pub async fn list(State(state): State<SharedState>) -> Json<serde_json::Value> {
    Json(report(&state))
}

/// The serve loop's channel states joined with the breakers Envoy reported.
fn report(state: &ApiState) -> serde_json::Value {
    use router_core::health::State;
    let now = crate::commands::serve::epoch_ms();
    let mut channels = state.channels.borrow().clone();
    let (health, reported_at) = state.health.lock().map(|h| h.clone()).unwrap_or_default();
    if let Some(list) = channels.as_array_mut() {
        for ch in list {
            let id = ch["id"].as_str().unwrap_or_default().to_string();
            let breakers: Vec<serde_json::Value> = health
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() == id || k.starts_with(&format!("{id} ")))
                .map(|(k, h)| {
                    let state = match h.state {
                        State::Closed => "closed",
                        State::Open if now >= h.until_ms => "half_open_due",
                        State::Open => "open",
                        State::HalfOpen => "half_open",
                    };
                    serde_json::json!({
                        "scope": if k == &id { "channel".to_string() } else { k[id.len() + 1..].to_string() },
                        "state": state,
                        "reason": h.reason.describe(),
                        "since_ms": h.since_ms,
                        "cooldown_until_ms": if h.state == State::Closed { None } else { Some(h.until_ms) },
                        "failures_in_window": h.failures,
                    })
                })
                .collect();
            if let (Some(w), Some(limits)) =
                (health.windows.get(&id), ch.get_mut("limits").and_then(|l| l.as_object_mut()))
            {
                // What Envoy counted: the current window's and day's requests.
                let day_started = limits.get("day_started_ms").and_then(serde_json::Value::as_u64);
                let window_ms =
                    limits.get("window_seconds").and_then(serde_json::Value::as_f64).unwrap_or(60.0) * 1000.0;
                let in_window = if now < w.start_ms.saturating_add(window_ms as u64) { w.count } else { 0 };
                let today = if day_started == Some(w.day_start_ms) { w.day_count } else { 0 };
                limits.insert("requests_in_window".into(), in_window.into());
                limits.insert("window_started_ms".into(), w.start_ms.into());
                limits.insert("requests_today".into(), today.into());
            }
            let out = breakers.iter().any(|b| b["scope"] == "channel" && b["state"] == "open");
            ch["breakers"] = serde_json::Value::Array(breakers);
            if out {
                ch["state"] = serde_json::Value::from("out");
            }
        }
    }
    serde_json::json!({"channels": channels, "health_reported_at_ms": reported_at})
}
