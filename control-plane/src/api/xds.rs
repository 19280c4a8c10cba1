//! `POST /v3/discovery:clusters`: Envoy's cluster discovery (REST-JSON polling).
//! Envoy sends the version it holds; the same version gets 304 (Envoy keeps
//! what it has, at almost no cost), another gets every channel's cluster.
//!
//! Envoy's REST discovery client cannot send a bearer token, so this route
//! takes none. It gives away nothing secret: hosts, TLS names and the CA file's
//! path, never a key (keys travel in the table, which needs the table token).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::State as ApiState;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct DiscoveryRequest {
    version_info: String,
    node: Node,
    error_detail: Option<ErrorDetail>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Node {
    id: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ErrorDetail {
    message: String,
}

pub async fn clusters(State(state): State<ApiState>, body: Bytes) -> Response {
    let ask: DiscoveryRequest = serde_json::from_slice(&body).unwrap_or_default();
    let served = state.clusters.borrow().clone();
    if let Some(e) = ask.error_detail {
        // Envoy says why it refused the last answer (and keeps the one before);
        // it asks again every poll, the log says it once per version.
        let first = state
            .cds_rejected
            .lock()
            .is_ok_and(|mut v| std::mem::replace(&mut *v, served.version.clone()) != served.version);
        if first {
            tracing::error!("Envoy {} rejected clusters {}: {}", ask.node.id, served.version, e.message);
        }
    }
    if ask.version_info == served.version {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], served.body.clone()).into_response()
}
