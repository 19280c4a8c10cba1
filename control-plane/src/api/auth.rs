//! Bearer tokens, compared in constant time: the table token for Envoy's side,
//! the admin token for `/admin/v1/*`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, State as ApiState};
use crate::secrets;

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    router_core::flow::client_token(value)
}

pub async fn table_token(State(state): State<ApiState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if !bearer(&req).is_some_and(|t| secrets::same(t, &state.table_token)) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_table_token", "missing or wrong table token"));
    }
    Ok(next.run(req).await)
}

pub async fn admin_token(State(state): State<ApiState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if !bearer(&req).is_some_and(|t| secrets::same(t, &state.admin_token)) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_admin_token", "missing or wrong admin token"));
    }
    Ok(next.run(req).await)
}
