//! Errors in OpenAI's shape, `{"error": {"message", "type", "code"}}`, with the
//! message also in `x-error` (Envoy's table fetcher logs that header rather than
//! parsing bodies).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn no_table() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_table", "no table built yet")
    }

    pub fn stopping() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the control plane is stopping")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() { "server_error" } else { "invalid_request_error" };
        let body = serde_json::json!({"error": {"message": self.message, "type": kind, "code": self.code}});
        let mut r = (self.status, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.message) {
            r.headers_mut().insert("x-error", v);
        }
        r
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_url", "unknown endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}

/// A JSON request body of at most `LIMIT` bytes, or an OpenAI-shaped 413/400.
pub struct JsonBody<T, const LIMIT: usize>(pub T);

impl<S, T, const LIMIT: usize> axum::extract::FromRequest<S> for JsonBody<T, LIMIT>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_limited(req, LIMIT).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("request body is not the JSON expected: {e}")))
    }
}

/// The whole body, refusing more than `limit` bytes.
pub async fn read_limited(req: axum::extract::Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", format!("request body over {limit} bytes"))
    })
}
