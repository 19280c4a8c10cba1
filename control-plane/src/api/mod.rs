//! The control plane's HTTP API, one module per resource. Authentication,
//! errors and body limits are shared: every error is OpenAI-shaped JSON, and
//! every route but `/healthz` needs a bearer token.
//!
//! - `GET /healthz`: liveness and the published table version (no token).
//! - `POST /v3/discovery:clusters`: the channels' clusters for Envoy (no token:
//!   Envoy cannot send one there, and clusters hold no secret).
//! - `GET /v1/table`, `POST /v1/health-report`, `POST /v1/usage`: Envoy's side
//!   (table token).
//! - `/admin/v1/...`: explain, channels, model groups, client tokens, budgets,
//!   routing settings and strategy (read and change), usage records and
//!   statistics, alerts, the effective config and the audit log (an admin
//!   token; a viewer token reads only).

mod alerts;
mod audit;
mod auth;
mod budgets;
mod channels;
mod error;
mod explain;
mod objects;
mod settings;
mod stats;
mod strategy;
mod switch;
mod table;
mod tokens;
mod usage;
mod xds;

use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, watch};

pub use error::ApiError;

/// A table as served: its version, its JSON, and its compiled form for explain.
#[derive(Debug)]
pub struct Published {
    pub version: String,
    pub json: axum::body::Bytes,
    pub table: Arc<router_core::Table>,
}

/// A change the serve loop makes for the API; it answers on `reply`.
pub enum Command {
    /// Turn smart routing on or off; the answer is when it takes effect.
    Switch {
        smart: bool,
        actor: String,
        reply: tokio::sync::oneshot::Sender<Result<u64, SwitchRefused>>,
    },
    SetStrategy {
        name: String,
        actor: String,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// An admin change to one object; the answer is the object after it.
    Change {
        kind: crate::admin::Kind,
        name: String,
        ask: crate::admin::Ask,
        actor: String,
        reply: tokio::sync::oneshot::Sender<Result<Option<serde_json::Value>, crate::admin::ChangeError>>,
    },
}

/// Why the routing switch was not moved.
#[derive(Debug)]
pub enum SwitchRefused {
    /// A change is waiting for its delay.
    Pending {
        at_ms: u64,
    },
    /// Too soon after the last change.
    Cooldown {
        until_ms: u64,
    },
    Change(crate::admin::ChangeError),
}

/// What the handlers share.
pub struct ApiState {
    pub table: watch::Receiver<Option<Arc<Published>>>,
    pub table_token: String,
    /// Admin API tokens (by hash) with their ids and roles.
    pub admin_tokens: Vec<crate::secrets::AdminToken>,
    /// Per-channel discovery, key and health-check state, kept by the serve loop.
    pub channels: watch::Receiver<serde_json::Value>,
    /// Each Envoy's last health report.
    pub reports: Mutex<crate::reports::Reports>,
    /// Changes the API asks of the serve loop.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Usage records.
    pub store: Arc<crate::usage::Store>,
    /// Where statistics count days, weeks and months.
    pub timezone: jiff::tz::TimeZone,
    /// The channels' clusters, for Envoy's cluster discovery.
    pub clusters: watch::Receiver<Arc<crate::clusters::Served>>,
    /// The cluster version an Envoy last said it rejected (logged once).
    pub cds_rejected: Mutex<String>,
    /// The effective configuration (file and admin changes), keys unmasked:
    /// handlers mask what they show.
    pub effective: watch::Receiver<Arc<crate::admin::Effective>>,
}

pub type State = Arc<ApiState>;

impl ApiState {
    /// The Envoys' health as one, and when the last report came (ms since the epoch).
    pub fn health(&self) -> (router_core::health::HealthMap, u64) {
        let now = crate::commands::serve::epoch_ms();
        self.reports.lock().map(|r| r.merged(now)).unwrap_or_default()
    }
}

pub fn router(state: State) -> Router {
    let envoy = Router::new()
        .route("/v1/table", get(table::get_table))
        .route("/v1/health-report", post(table::health_report))
        .route("/v1/usage", post(usage::ingest))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::table_token));
    use crate::admin::Kind;
    // Channels and budgets list their state (health, spend) rather than their
    // settings; one channel or budget shows its settings.
    let objects = objects::item_routes(Kind::Channel, "/admin/v1/channels")
        .merge(objects::item_routes(Kind::Group, "/admin/v1/groups"))
        .merge(objects::item_routes(Kind::Token, "/admin/v1/tokens"))
        .merge(objects::item_routes(Kind::Budget, "/admin/v1/budgets"))
        .route("/admin/v1/channels", get(channels::list).merge(objects::create_route(Kind::Channel)))
        .route("/admin/v1/groups", objects::list_route(Kind::Group).merge(objects::create_route(Kind::Group)))
        .route("/admin/v1/budgets", get(budgets::list).merge(objects::create_route(Kind::Budget)))
        .route("/admin/v1/tokens", objects::list_route(Kind::Token).post(tokens::create));
    let admin = Router::new()
        .merge(objects)
        .route("/admin/v1/explain", post(explain::explain))
        .route("/admin/v1/alerts", get(alerts::list))
        .route("/admin/v1/alerts/{id}/ack", post(alerts::ack))
        .route(
            "/admin/v1/routing",
            get(settings::get_routing).patch(settings::patch_routing).delete(settings::reset_routing),
        )
        .route("/admin/v1/config", get(settings::config))
        .route("/admin/v1/switch", get(switch::get).put(switch::put))
        .route("/admin/v1/audit", get(audit::list))
        .route("/admin/v1/strategy", get(strategy::get).put(strategy::put))
        .route("/admin/v1/usage", get(usage::list))
        .route("/admin/v1/stats/summary", get(stats::summary))
        .route("/admin/v1/stats/breakdown", get(stats::breakdown))
        .route("/admin/v1/stats/timeseries", get(stats::timeseries))
        .route("/admin/v1/stats/forecast", get(stats::forecast))
        .route("/admin/v1/stats/savings", get(stats::savings))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::admin_token));
    Router::new()
        .route("/healthz", get(table::healthz))
        .route(crate::envoy::CDS_PATH, post(xds::clusters))
        .merge(envoy)
        .merge(admin)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

/// Serve the API on `listener` until the process stops.
pub async fn serve(listener: tokio::net::TcpListener, state: State) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("control plane API stopped: {e}");
    }
}
