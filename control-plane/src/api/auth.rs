//! Bearer tokens, compared in constant time: the table token for Envoy's side,
//! an admin token for `/admin/v1/*`. A viewer token may only read; every
//! admin request carries its token's [`Actor`] for the audit log.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, State as ApiState};
use crate::config::AdminRole;
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

/// Who made an admin request: the admin token's id.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
}

/// Reads are whatever changes nothing: GET, and asking how a query resolves.
fn is_read(req: &Request) -> bool {
    req.method() == Method::GET || req.method() == Method::HEAD || req.uri().path() == "/admin/v1/explain"
}

pub async fn admin_token(State(state): State<ApiState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let found = bearer(&req).and_then(|t| secrets::admin_of(&state.admin_tokens, t).cloned());
    let Some(token) = found else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_admin_token", "missing or wrong admin token"));
    };
    if token.role == AdminRole::Viewer && !is_read(&req) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!("admin token \"{}\" is a viewer: it may read, not change", token.id),
        ));
    }
    req.extensions_mut().insert(Actor { id: token.id });
    Ok(next.run(req).await)
}
