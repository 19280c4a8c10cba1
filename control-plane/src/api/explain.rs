//! `POST /admin/v1/explain` `{"model": "..."}`: how a model query resolves now,
//! by the routing code itself.

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
    Ok(Json(v))
}
