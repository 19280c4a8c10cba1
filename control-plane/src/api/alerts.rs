//! `GET /admin/v1/alerts` lists alerts, newest first (those not acknowledged,
//! or all with `?all=true`); `POST /admin/v1/alerts/{id}/ack` acknowledges one.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::usage::store;
use super::{ApiError, State as ApiState};

#[derive(serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alerts = state.store.alerts(q.all, q.limit.unwrap_or(100).clamp(1, 1000)).await.map_err(store)?;
    Ok(Json(serde_json::json!({"data": alerts})))
}

pub async fn ack(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let now = crate::commands::serve::epoch_ms();
    if !state.store.ack_alert(&id, now).await.map_err(store)? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "alert_not_found", format!("no alert {id}")));
    }
    Ok(Json(serde_json::json!({"id": id, "acknowledged": true})))
}
