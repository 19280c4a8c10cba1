//! Usage records: `POST /v1/usage` takes Envoy's deliveries (table token);
//! `GET /admin/v1/usage` lists them (admin token).

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::read_limited;
use super::{ApiError, State as ApiState};
use crate::usage::{Cursor, RecordOut};

/// Largest delivery taken: a batch is a few thousand records of a few hundred bytes.
const DELIVERY_LIMIT: usize = 32 * 1024 * 1024;

/// `POST /v1/usage`: records, one JSON object a line. 204 only once they are
/// stored (Envoy sends the batch again otherwise; ids keep it from counting twice).
pub async fn ingest(State(state): State<ApiState>, req: Request) -> Result<StatusCode, ApiError> {
    let body = read_limited(req, DELIVERY_LIMIT).await?;
    let (records, bad) = router_core::record::parse_lines(&body);
    if bad > 0 {
        tracing::warn!("usage delivery: {bad} lines that are not records were left out");
    }
    state.store.insert(&records).await.map_err(|e| {
        tracing::error!("usage records not stored (Envoy will send them again): {e}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "usage records could not be stored")
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    since_ms: u64,
    #[serde(default)]
    until_ms: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(serde::Serialize)]
pub struct Page {
    data: Vec<RecordOut>,
    next_cursor: Option<String>,
}

/// Most records a page holds.
const MAX_PAGE: usize = 1000;

pub async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Result<Json<Page>, ApiError> {
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| ApiError::bad_request("invalid_cursor", "unknown cursor"))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let (data, next) = state
        .store
        .list(q.since_ms, q.until_ms.unwrap_or(u64::MAX / 2), limit, cursor.as_ref())
        .await
        .map_err(store)?;
    Ok(Json(Page { data, next_cursor: next.map(|c| c.encode()) }))
}

pub fn store(e: crate::usage::StoreError) -> ApiError {
    tracing::error!("{e}");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the usage store is unavailable")
}
