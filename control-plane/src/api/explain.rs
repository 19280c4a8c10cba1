//! `POST /admin/v1/explain` `{"model": "..."}`: how a model query resolves now,
//! by the routing code itself; `plan_now` is the plan Envoy would make with the
//! health, counts and spending its last reports showed (what is left out and why).

use axum::extract::State;
use axum::Json;

use super::error::JsonBody;
use super::{ApiError, State as ApiState};

#[derive(serde::Deserialize)]
pub struct Ask {
    model: String,
}

pub async fn explain(
    State(state): State<ApiState>,
    JsonBody(ask): JsonBody<Ask, { 64 * 1024 }>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let published = state.table.borrow().clone().ok_or_else(ApiError::no_table)?;
    let mut v = router_core::resolve::explain_json(&published.table, &ask.model);
    v["table_version"] = serde_json::Value::String(published.version.clone());
    let (health, _) = state.health();
    let perf = router_core::score::PerfMap::default();
    let now = crate::commands::serve::epoch_ms();
    let live = router_core::plan::Live {
        health: &health,
        perf: &perf,
        now_ms: now,
        rotation: 0,
        token: None,
        size: Default::default(),
    };
    let table = &published.table;
    v["plan_now"] = match router_core::plan::plan(table, &ask.model, live) {
        Ok(p) => serde_json::json!({
            "attempts": p.plan.attempts.iter().filter_map(|a| {
                let ch = table.channel(a.channel)?;
                Some(serde_json::json!({"channel": ch.id, "key": ch.key, "model": a.upstream_model}))
            }).collect::<Vec<_>>(),
            "left_out": p.left_out,
        }),
        Err(e) => serde_json::json!({"error": {"status": e.status, "code": e.code, "message": e.message}}),
    };
    Ok(Json(v))
}
