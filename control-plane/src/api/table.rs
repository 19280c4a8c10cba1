//! The channel table for Envoy, and Envoy's health reports.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::read_limited;
use super::{ApiError, State as ApiState};

/// Liveness and the published table version.
pub async fn healthz(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let version = state.table.borrow().as_ref().map(|p| p.version.clone()).unwrap_or_default();
    Json(serde_json::json!({"status": "ok", "table_version": version}))
}

/// `GET /v1/table`: the table's JSON; `If-None-Match` with the current version
/// answers 304, so Envoy's polling costs almost nothing.
pub async fn get_table(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let published = state.table.borrow().clone().ok_or_else(ApiError::no_table)?;
    let etag = HeaderValue::from_str(&published.version).ok();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(published.version.as_str()) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let mut r = Response::new(Body::from(published.json.clone()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(v) = etag {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

/// Largest health report taken (a map of every failing channel and model).
const REPORT_LIMIT: usize = 4 * 1024 * 1024;

/// `POST /v1/health-report`: Envoy's breaker and cooldown states, shown by
/// `GET /admin/v1/channels`.
pub async fn health_report(State(state): State<ApiState>, req: Request) -> Result<StatusCode, ApiError> {
    let body = read_limited(req, REPORT_LIMIT).await?;
    let map = router_core::health::HealthMap::decode(&String::from_utf8_lossy(&body));
    if let Ok(mut h) = state.health.lock() {
        *h = (map, crate::commands::serve::epoch_ms());
    }
    Ok(StatusCode::NO_CONTENT)
}
