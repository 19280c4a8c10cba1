//! `/admin/v1/tokens`: client tokens. The router makes each new token and
//! keeps only its SHA-256; the token itself is in the answer to the `POST` that
//! made it, and nowhere else ever again. `DELETE` revokes it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

use super::auth::Actor;
use super::error::JsonBody;
use super::objects::{self, MAX_OBJECT_BYTES};
use super::{ApiError, State as ApiState};
use crate::admin::{Ask, Kind};

pub async fn create(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(mut doc): JsonBody<Value, MAX_OBJECT_BYTES>,
) -> Result<Response, ApiError> {
    let Some(fields) = doc.as_object_mut() else {
        return Err(ApiError::bad_request("invalid_object", "a token must be a JSON object"));
    };
    if fields.contains_key("token") {
        return Err(ApiError::bad_request(
            "invalid_object",
            "the router makes the token: send its id and rules (or a `sha256` of your own token)",
        ));
    }
    let id = match fields.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::bad_request("invalid_object", "a token needs an \"id\"")),
    };
    let token = if fields.contains_key("sha256") {
        None
    } else {
        let token = crate::secrets::new_client_token()
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_random", e.to_string()))?;
        fields.insert("sha256".into(), Value::String(router_core::table::token_hash_hex(&token)));
        Some(token)
    };
    let after = objects::send(&state, Kind::Token, &id, Ask::Create(doc), &actor).await?;
    let mut out = after.unwrap_or_default();
    if let (Some(fields), Some(token)) = (out.as_object_mut(), token) {
        fields.insert("token".into(), Value::String(token));
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
