//! `GET /admin/v1/audit`: every admin change, newest first, with who made it
//! (an admin token's id), what, and the object before and after (keys masked).
//! Filters: `kind`, `name`, `actor`, `action`, `since_ms`, `until_ms`; pages of
//! `limit` (100, at most 1000) with `cursor` = the previous page's `next`.

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::usage::store;
use super::{ApiError, State as ApiState};
use crate::admin::store::AuditFilter;

pub async fn list(State(state): State<ApiState>, Query(filter): Query<AuditFilter>) -> Result<Json<Value>, ApiError> {
    let (entries, next) = state.store.audit(&filter).await.map_err(store)?;
    Ok(Json(json!({"object": "list", "data": entries, "next": next})))
}
