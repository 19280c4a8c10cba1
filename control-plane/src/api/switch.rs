//! `GET|PUT /admin/v1/switch` `{"smart": false}`: the routing switch. Off, every
//! request goes to `routing.switch.default` (a channel and model); on, to the
//! best channel as usual. A change takes effect `delay_seconds` after it is
//! asked (202 with `takes_effect_ms`), is refused with 429 until
//! `cooldown_seconds` after the last one took effect, and with 409 while one
//! is waiting. `history`: every switch, who made it and when, newest first.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::Actor;
use super::error::JsonBody;
use super::usage::store;
use super::{ApiError, Command, State as ApiState, SwitchRefused};
use crate::admin::store::AuditFilter;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    smart: bool,
}

fn switch_of(state: &ApiState) -> Value {
    let effective = state.effective.borrow().clone();
    effective.value.get("routing").and_then(|r| r.get("switch")).cloned().unwrap_or(Value::Null)
}

pub async fn get(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let now = crate::commands::serve::epoch_ms();
    let sw = switch_of(&state);
    let asked = sw.get("smart").and_then(Value::as_bool).unwrap_or(true);
    let since = sw.get("since_ms").and_then(Value::as_u64).unwrap_or(0);
    let cooldown = sw.get("cooldown_seconds").and_then(Value::as_f64).unwrap_or(0.0);
    let filter = AuditFilter {
        kind: Some("routing".into()),
        action: Some("switch".into()),
        limit: Some(100),
        ..Default::default()
    };
    let (entries, _) = state.store.audit(&filter).await.map_err(store)?;
    let smart_of = |v: &Option<Value>| {
        v.as_ref().and_then(|v| v.get("switch")).and_then(|s| s.get("smart")).and_then(Value::as_bool).unwrap_or(true)
    };
    let history: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "asked_ms": e.at_ms,
                "takes_effect_ms": e.after.as_ref().and_then(|a| a["switch"]["since_ms"].as_u64()),
                "actor": e.actor,
                "from": if smart_of(&e.before) { "smart" } else { "default" },
                "to": if smart_of(&e.after) { "smart" } else { "default" },
            })
        })
        .collect();
    Ok(Json(json!({
        "smart": if now >= since { asked } else { !asked },
        "pending": (now < since).then(|| json!({"smart": asked, "takes_effect_ms": since})),
        "default": sw.get("default").cloned().unwrap_or(Value::Null),
        "delay_seconds": sw.get("delay_seconds").cloned().unwrap_or(json!(0)),
        "cooldown_seconds": cooldown,
        "next_change_ms": since + (cooldown * 1000.0) as u64,
        "history": history,
    })))
}

pub async fn put(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(ask): JsonBody<Ask, { 64 * 1024 }>,
) -> Result<Response, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    state
        .commands
        .send(Command::Switch { smart: ask.smart, actor: actor.id, reply })
        .map_err(|_| ApiError::stopping())?;
    let now = crate::commands::serve::epoch_ms();
    match answer.await.map_err(|_| ApiError::stopping())? {
        Ok(at_ms) => {
            let status = if at_ms > now { StatusCode::ACCEPTED } else { StatusCode::OK };
            Ok((status, Json(json!({"smart": ask.smart, "takes_effect_ms": at_ms}))).into_response())
        }
        Err(SwitchRefused::Pending { at_ms }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "switch_pending",
            format!("a switch is waiting to take effect at {at_ms} (ms since the epoch)"),
        )),
        Err(SwitchRefused::Cooldown { until_ms }) => {
            let wait_s = until_ms.saturating_sub(now).div_ceil(1000).max(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "switch_cooldown",
                format!("the switch moved too recently; try again in {wait_s} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait_s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Ok(r)
        }
        Err(SwitchRefused::Change(e)) => Err(e.into()),
    }
}
