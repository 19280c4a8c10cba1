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

/// `POST /v1/health-report`: an Envoy's breakers, cooldowns, counts and
/// spending, shown by the admin API. The answer holds what the other Envoys
/// counted for client tokens with limits (in the same line format), or is 204
/// when there is nothing to tell.
pub async fn health_report(State(state): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let node = req
        .headers()
        .get(router_core::roles::NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("envoy")
        .chars()
        .take(64)
        .collect::<String>();
    let body = read_limited(req, REPORT_LIMIT).await?;
    let map = router_core::health::HealthMap::decode(&String::from_utf8_lossy(&body));
    let now = crate::commands::serve::epoch_ms();
    let table = state.table.borrow().clone();
    let others = match state.reports.lock() {
        Ok(mut reports) => {
            reports.put(&node, map, now);
            table.filter(|p| p.table.tokens_limited).map(|p| {
                reports.others(&node, now, |id| p.table.token_by_id(id).and_then(|t| t.limits).map(|l| l.window_ms))
            })
        }
        Err(_) => None,
    };
    Ok(match others {
        Some(map) => {
            let mut r = Response::new(Body::from(map.encode()));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}
