//! `GET /admin/v1/budgets`: each budget's limit, what the records say it spent
//! in its period, and what Envoy has spent since and holds for requests in
//! flight (from its last health report).

use axum::extract::State;
use axum::Json;
use router_core::cost::usd;

use super::{ApiError, State as ApiState};

pub async fn list(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let table = state.table.borrow().clone().ok_or_else(ApiError::no_table)?;
    let (health, reported_at) = state.health();
    let data: Vec<serde_json::Value> = table
        .table
        .budgets
        .iter()
        .map(|b| {
            let envoy = health.spend.get(&b.id).copied().unwrap_or_default();
            let committed = health.committed(b);
            serde_json::json!({
                "id": b.id,
                "channel": b.channel,
                "group": b.group,
                "token": b.token,
                "limit_usd": usd(b.limit_pico),
                "spent_usd": usd(b.spent_pico),
                "summed_at_ms": b.as_of_ms,
                "reserved_usd": usd(envoy.reserved_pico),
                "committed_usd": usd(committed),
                "resets_ms": b.resets_ms,
                "when_exceeded": if b.refuse { "refuse" } else { "free_only" },
                "exceeded": committed >= b.limit_pico,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"data": data, "health_reported_at_ms": reported_at})))
}
