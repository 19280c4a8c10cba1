//! The control plane's HTTP API.
//!
//! - `GET /v1/table`: the channel table for filters. It holds provider keys, so it
//!   needs `Authorization: Bearer <table token>`. `If-None-Match` with the current
//!   version answers 304, so Envoy's polling costs almost nothing.
//! - `GET /healthz`: liveness and the published table version.
//! - `POST /v1/health-report`: Envoy's breaker and cooldown states (table token).
//! - `POST /admin/v1/explain` `{"model": "..."}`: how a model query resolves right
//!   now (the routing code itself), with `Authorization: Bearer <admin token>`.
//! - `GET /admin/v1/channels`: each channel's discovery, key and health-check state,
//!   and the breakers Envoy reported.
//! - `GET|PUT /admin/v1/strategy` `{"strategy": "speed_optimized"}`: the routing
//!   strategy in force; a change reaches Envoy with the next table, no restart.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::log;
use crate::tokens;

/// A table as served: its version, its JSON, and its compiled form for explain.
#[derive(Debug)]
pub struct Published {
    pub version: String,
    pub json: Bytes,
    pub table: Arc<router_core::Table>,
}

pub struct ServerState {
    pub table: watch::Receiver<Option<Arc<Published>>>,
    pub table_token: String,
    pub admin_token: String,
    /// Per-channel discovery, key and health-check state, kept by the serve loop.
    pub channels: watch::Receiver<serde_json::Value>,
    /// The last health map Envoy reported, and when (ms since the epoch).
    pub health: std::sync::Mutex<(router_core::health::HealthMap, u64)>,
    /// Changes the admin API asks of the serve loop.
    pub commands: tokio::sync::mpsc::UnboundedSender<Command>,
}

/// A change the serve loop makes for the admin API; it answers on `reply`.
pub enum Command {
    SetStrategy { name: String, reply: tokio::sync::oneshot::Sender<Result<(), String>> },
}

pub async fn run(listener: TcpListener, state: Arc<ServerState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn(&format!("control plane: accept failed: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
    let mut r = json(status, body.to_string());
    if let Ok(v) = hyper::header::HeaderValue::from_str(message) {
        // Envoy's table fetcher logs this header rather than parsing the body.
        r.headers_mut().insert("x-error", v);
    }
    r
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

pub async fn handle(req: Request<Incoming>, state: &ServerState) -> Response<Full<Bytes>> {
    let published = state.table.borrow().clone();
    if req.uri().path().starts_with("/admin/") {
        return admin(req, state, published).await;
    }
    if req.method() == Method::POST && req.uri().path() == "/v1/health-report" {
        if !bearer(&req).is_some_and(|t| tokens::same(t, &state.table_token)) {
            return error(StatusCode::UNAUTHORIZED, "invalid_table_token", "missing or wrong table token");
        }
        let Ok(body) = Limited::new(req.into_body(), 4 * 1024 * 1024).collect().await else {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "report over 4 MiB");
        };
        let map = router_core::health::HealthMap::decode(&String::from_utf8_lossy(&body.to_bytes()));
        if let Ok(mut h) = state.health.lock() {
            *h = (map, crate::serve::epoch_ms());
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    let req = &req;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            let version = published.as_ref().map(|p| p.version.as_str()).unwrap_or("");
            json(StatusCode::OK, serde_json::json!({"status": "ok", "table_version": version}).to_string())
        }
        (&Method::GET, "/v1/table") => {
            if !bearer(req).is_some_and(|t| tokens::same(t, &state.table_token)) {
                return error(StatusCode::UNAUTHORIZED, "invalid_table_token", "missing or wrong table token");
            }
            let Some(p) = published else {
                return error(StatusCode::SERVICE_UNAVAILABLE, "no_table", "no table built yet");
            };
            let etag = hyper::header::HeaderValue::from_str(&p.version).ok();
            if req.headers().get("if-none-match").and_then(|v| v.to_str().ok()) == Some(p.version.as_str()) {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                return r;
            }
            let mut r = json(StatusCode::OK, p.json.clone());
            if let Some(v) = etag {
                r.headers_mut().insert("etag", v);
            }
            r
        }
        _ => error(StatusCode::NOT_FOUND, "unknown_url", "unknown endpoint"),
    }
}

async fn admin(
    req: Request<Incoming>,
    state: &ServerState,
    published: Option<Arc<Published>>,
) -> Response<Full<Bytes>> {
    if !bearer(&req).is_some_and(|t| tokens::same(t, &state.admin_token)) {
        return error(StatusCode::UNAUTHORIZED, "invalid_admin_token", "missing or wrong admin token");
    }
    match (req.method().clone(), req.uri().path().to_string()) {
        (Method::POST, p) if p == "/admin/v1/explain" => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "body over 64 KiB"),
            };
            #[derive(serde::Deserialize)]
            struct Explain {
                model: String,
            }
            let Ok(ask) = serde_json::from_slice::<Explain>(&body) else {
                return error(StatusCode::BAD_REQUEST, "invalid_json", "expected {\"model\": \"...\"}");
            };
            let Some(p) = published else {
                return error(StatusCode::SERVICE_UNAVAILABLE, "no_table", "no table built yet");
            };
            let mut v = router_core::resolve::explain_json(&p.table, &ask.model);
            v["table_version"] = serde_json::Value::String(p.version.clone());
            json(StatusCode::OK, v.to_string())
        }
        (Method::GET, p) if p == "/admin/v1/channels" => json(StatusCode::OK, channels_report(state).to_string()),
        (Method::GET, p) if p == "/admin/v1/strategy" => {
            let name = published.map(|p| p.table.routing.default_strategy.clone()).unwrap_or_default();
            json(StatusCode::OK, serde_json::json!({"strategy": name}).to_string())
        }
        (Method::PUT, p) if p == "/admin/v1/strategy" => {
            #[derive(serde::Deserialize)]
            struct Ask {
                strategy: String,
            }
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "body over 64 KiB"),
            };
            let Ok(ask) = serde_json::from_slice::<Ask>(&body) else {
                return error(StatusCode::BAD_REQUEST, "invalid_json", "expected {\"strategy\": \"...\"}");
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            if state.commands.send(Command::SetStrategy { name: ask.strategy.clone(), reply }).is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the control plane is stopping");
            }
            match answer.await {
                Ok(Ok(())) => json(StatusCode::OK, serde_json::json!({"strategy": ask.strategy}).to_string()),
                Ok(Err(why)) => error(StatusCode::BAD_REQUEST, "unknown_strategy", &why),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the control plane is stopping"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "unknown_url", "unknown admin endpoint"),
    }
}

/// The serve loop's channel states joined with the breakers Envoy reported.
fn channels_report(state: &ServerState) -> serde_json::Value {
    use router_core::health::State;
    let now = crate::serve::epoch_ms();
    let mut channels = state.channels.borrow().clone();
    let (health, reported_at) = state.health.lock().map(|h| h.clone()).unwrap_or_default();
    if let Some(list) = channels.as_array_mut() {
        for ch in list {
            let id = ch["id"].as_str().unwrap_or_default().to_string();
            let breakers: Vec<serde_json::Value> = health
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() == id || k.starts_with(&format!("{id} ")))
                .map(|(k, h)| {
                    let state = match h.state {
                        State::Closed => "closed",
                        State::Open if now >= h.until_ms => "half_open_due",
                        State::Open => "open",
                        State::HalfOpen => "half_open",
                    };
                    serde_json::json!({
                        "scope": if k == &id { "channel".to_string() } else { k[id.len() + 1..].to_string() },
                        "state": state,
                        "reason": h.reason.describe(),
                        "since_ms": h.since_ms,
                        "cooldown_until_ms": if h.state == State::Closed { None } else { Some(h.until_ms) },
                        "failures_in_window": h.failures,
                    })
                })
                .collect();
            let out = breakers.iter().any(|b| b["scope"] == "channel" && b["state"] == "open");
            ch["breakers"] = serde_json::Value::Array(breakers);
            if out {
                ch["state"] = serde_json::Value::from("out");
            }
        }
    }
    serde_json::json!({"channels": channels, "health_reported_at_ms": reported_at})
}
