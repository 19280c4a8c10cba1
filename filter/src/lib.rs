//! Smart AI Router as a proxy-wasm filter for Envoy.
//!
//! One wasm binary plays four roles, chosen by the plugin configuration's `role`:
//!
//! - `service`: a singleton `WasmService` (bootstrap extension, main thread). It polls
//!   the control plane for the channel table and publishes good tables in shared
//!   data, which is process-wide per `vm_id`. A table that does not compile is never
//!   published, so workers keep the last good one; so they do when the control plane
//!   is down. It also reports the workers' breaker states to the control plane.
//! - `router`: the downstream HTTP filter. It answers `/v1/models` and `/health`,
//!   buffers a chat request, resolves `model` to candidates, scores them, leaves out
//!   those whose breaker is open (see `health`, `perf`) and hands the plan to
//!   Envoy: a header that `header_to_metadata` turns into the `priority_group` cluster
//!   specifier's override, plus `x-envoy-max-retries`. Envoy then executes the
//!   attempts (retry with `refresh_cluster_on_retry`), streaming included. On the way
//!   back it adds debug headers, counts stats, and replaces a final failure with an
//!   OpenAI-shaped 503 that lists the channels tried.
//! - `clear_route`: after `header_to_metadata`, makes Envoy resolve the route again
//!   so the first attempt follows the plan.
//! - `attempt`: an upstream HTTP filter in the router's `upstream_http_filters`, run
//!   once per attempt. It rewrites `:authority`, `:path`, the key header and the
//!   body's `model` for that attempt's channel. All attempts share one header map, so
//!   it rewrites from the plan in filter state rather than from what it sees. It
//!   records each attempt's outcome (breakers) and time to first byte (speed), and
//!   turns a context-length 400 into a retriable 503.

mod health;
mod host;
mod metrics;
mod perf;
mod shared;
mod unanswered;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use router_core::error::ascii_safe;
use router_core::flow::{self, HeadersVerdict, ResponseVerdict, CONTEXT_EXCEEDED_HEADER};
use router_core::health::classify;
use router_core::wire::{priority_groups_header, AttemptView};
use router_core::{RouterError, Table};
use serde::Deserialize;

/// Shared-data keys (process-wide for this `vm_id`). The version key is tiny, so
/// workers can poll it cheaply and fetch the table only when it changed.
const TABLE_KEY: &str = "sar.table";
const TABLE_VERSION_KEY: &str = "sar.table_version";
/// Filter state (`wasm.sar_attempts`) read by the per-attempt filter.
const ATTEMPTS_STATE: &str = "sar_attempts";
/// Request header turned into metadata by `header_to_metadata` (which removes it).
const PLAN_HEADER: &str = "x-sar-plan";
const JSON: (&str, &str) = ("content-type", "application/json");

#[derive(Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
enum PluginConfig {
    Service {
        control_plane_cluster: String,
        control_plane_authority: String,
        token: String,
        #[serde(default = "default_poll_ms")]
        poll_ms: u64,
    },
    Router {
        /// Clusters this Envoy has; channels outside it are left out of plans.
        #[serde(default)]
        clusters: Vec<String>,
        #[serde(default = "default_max_body")]
        max_body_bytes: usize,
        /// The route's `num_retries`: a plan that uses exactly that many needs no
        /// `x-envoy-max-retries` header.
        #[serde(default)]
        num_retries: Option<usize>,
    },
    Attempt {},
    /// Placed after `header_to_metadata`: makes Envoy resolve the route again, now
    /// that the plan is in metadata (the route was resolved before it existed).
    ClearRoute {},
}

fn default_poll_ms() -> u64 {
    500
}

fn default_max_body() -> usize {
    32 * 1024 * 1024
}

thread_local! {
    /// Requests planned by this VM: spreads equally good channels by weight.
    static ROTATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The compiled table of this VM (one VM per worker thread). Root contexts of the
    /// router and attempt roles in the same VM share it.
    static TABLE: RefCell<Option<Rc<Table>>> = const { RefCell::new(None) };
    static TABLE_VERSION: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static KNOWN_CLUSTERS: RefCell<Option<HashSet<String>>> = const { RefCell::new(None) };
}

fn current_table() -> Option<Rc<Table>> {
    TABLE.with(|t| t.borrow().clone())
}

/// Pick up a newer table from shared data, if the service published one.
fn refresh_table() {
    let Some(version) = host::shared_data(TABLE_VERSION_KEY) else {
        return;
    };
    if TABLE_VERSION.with(|v| *v.borrow() == version) {
        return;
    }
    let Some(bytes) = host::shared_data(TABLE_KEY) else {
        return;
    };
    let compiled = KNOWN_CLUSTERS.with(|k| Table::from_json(&bytes, k.borrow().as_ref()));
    match compiled {
        Ok(table) => {
            if !table.skipped_channels.is_empty() {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "smart-router: channels {:?} have no Envoy cluster yet (restart Envoy with a re-rendered config to route to them)",
                        table.skipped_channels
                    ),
                );
            }
            TABLE.with(|t| *t.borrow_mut() = Some(Rc::new(table)));
        }
        // The service validated it already; if it still fails here, keep the old one.
        Err(e) => host::log(LogLevel::Error, &format!("smart-router: table rejected, keeping the last good one: {e}")),
    }
    TABLE_VERSION.with(|v| *v.borrow_mut() = version);
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RouterRoot::default()) });
}}

#[derive(Default)]
struct RouterRoot {
    role: Option<Role>,
}

enum Role {
    Service(TableFetcher),
    Router { max_body_bytes: usize, num_retries: Option<usize> },
    Attempt,
    ClearRoute,
}

impl Context for RouterRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Some(Role::Service(fetcher)) = &mut self.role {
            if fetcher.report_call == Some(token) {
                fetcher.report_call = None;
                // Not delivered (control plane down): send it again next poll.
                if host::http_call_status() != Some(204) {
                    fetcher.reported_cas = None;
                }
            } else {
                fetcher.on_response(body_size);
            }
        }
    }
}

impl RootContext for RouterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = host::plugin_configuration().unwrap_or_default();
        let config: PluginConfig = match serde_json::from_slice(&raw) {
            Ok(c) => c,
            Err(e) => {
                host::log(LogLevel::Critical, &format!("smart-router: bad plugin configuration: {e}"));
                return false;
            }
        };
        self.role = Some(match config {
            PluginConfig::Service { control_plane_cluster, control_plane_authority, token, poll_ms } => {
                host::set_tick_period(Duration::from_millis(poll_ms.max(50)));
                let mut fetcher = TableFetcher {
                    cluster: control_plane_cluster,
                    authority: control_plane_authority,
                    authorization: format!("Bearer {token}"),
                    version: String::new(),
                    in_flight: false,
                    last_problem: None,
                    report_call: None,
                    reported_cas: None,
                };
                fetcher.poll();
                Role::Service(fetcher)
            }
            PluginConfig::Router { clusters, max_body_bytes, num_retries } => {
                if !clusters.is_empty() {
                    KNOWN_CLUSTERS.with(|k| *k.borrow_mut() = Some(clusters.into_iter().collect()));
                }
                // Tables and health reach this worker within one tick.
                host::set_tick_period(Duration::from_millis(100));
                refresh_table();
                health::refresh();
                Role::Router { max_body_bytes, num_retries }
            }
            PluginConfig::ClearRoute {} => Role::ClearRoute,
            PluginConfig::Attempt {} => {
                host::set_tick_period(Duration::from_millis(100));
                refresh_table();
                health::refresh();
                Role::Attempt
            }
        });
        true
    }

    fn on_tick(&mut self) {
        match &mut self.role {
            Some(Role::Service(fetcher)) => fetcher.poll(),
            Some(Role::Router { .. }) => {
                refresh_table();
                health::refresh();
                perf::tick();
                metrics::flush();
            }
            Some(Role::Attempt) => {
                refresh_table();
                health::refresh();
                perf::tick();
            }
            Some(Role::ClearRoute) | None => {}
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        match self.role {
            Some(Role::Router { max_body_bytes, num_retries }) => {
                Some(Box::new(RouterRequest::new(max_body_bytes, num_retries)))
            }
            Some(Role::Attempt) => Some(Box::new(AttemptRequest::default())),
            Some(Role::ClearRoute) => Some(Box::new(ClearRoute)),
            _ => None,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The `service` role: fetch the table from the control plane, publish good ones.
struct TableFetcher {
    cluster: String,
    authority: String,
    authorization: String,
    version: String,
    in_flight: bool,
    /// Logged once per change, not once per poll.
    last_problem: Option<String>,
    /// The health report in flight, and the shared-data version last reported.
    report_call: Option<u32>,
    reported_cas: Option<u32>,
}

impl TableFetcher {
    fn poll(&mut self) {
        self.report_health();
        if self.in_flight {
            return;
        }
        let headers = [
            (":method", "GET"),
            (":path", "/v1/table"),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("if-none-match", self.version.as_str()),
        ];
        match host::http_call(&self.cluster, &headers, None, Duration::from_secs(5)) {
            Some(_) => self.in_flight = true,
            None => self.problem(format!("cannot call cluster {}", self.cluster)),
        }
    }

    /// Send the workers' health map to the control plane when it changed, so
    /// `GET /admin/v1/channels` shows breakers and cooldowns (and the control plane
    /// learns of them without asking Envoy).
    fn report_health(&mut self) {
        if self.report_call.is_some() {
            return;
        }
        let (bytes, cas) = host::shared_data_cas(health::HEALTH_KEY);
        if cas.is_none() || cas == self.reported_cas {
            return;
        }
        let body = bytes.unwrap_or_default();
        let headers = [
            (":method", "POST"),
            (":path", "/v1/health-report"),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("content-type", "text/plain"),
        ];
        if let Some(token) = host::http_call(&self.cluster, &headers, Some(&body), Duration::from_secs(5)) {
            self.report_call = Some(token);
            self.reported_cas = cas;
        }
    }

    fn on_response(&mut self, body_size: usize) {
        self.in_flight = false;
        match host::http_call_status() {
            Some(304) => self.ok(),
            Some(200) => {
                let body = host::http_call_body(body_size).unwrap_or_default();
                match Table::from_json(&body, None) {
                    Ok(table) => {
                        let version = table.version.clone();
                        // Table first, then its version: a worker that sees the new
                        // version finds the new table.
                        if host::set_shared_data(TABLE_KEY, &body)
                            && host::set_shared_data(TABLE_VERSION_KEY, version.as_bytes())
                        {
                            host::log(
                                LogLevel::Info,
                                &format!("smart-router: table {version} loaded ({} channels)", table.channels.len()),
                            );
                            self.version = version;
                            self.ok();
                        } else {
                            self.problem("could not store the table in shared data".into());
                        }
                    }
                    Err(e) => self.problem(format!(
                        "control plane sent a table that does not compile, keeping {}: {e}",
                        self.shown_version()
                    )),
                }
            }
            Some(status) => self.problem(format!(
                "control plane answered {status}{}; keeping table {}",
                host::http_call_header("x-error").map(|e| format!(" ({})", ascii_safe(&e, 200))).unwrap_or_default(),
                self.shown_version()
            )),
            None => self.problem(format!("control plane unreachable; keeping table {}", self.shown_version())),
        }
    }

    fn shown_version(&self) -> String {
        if self.version.is_empty() {
            "(none yet)".into()
        } else {
            self.version.clone()
        }
    }

    fn ok(&mut self) {
        if self.last_problem.take().is_some() {
            host::log(LogLevel::Info, "smart-router: control plane reachable again");
        }
    }

    fn problem(&mut self, message: String) {
        if self.last_problem.as_deref() != Some(message.as_str()) {
            host::log(LogLevel::Warn, &format!("smart-router: {message}"));
            self.last_problem = Some(message);
        }
    }
}

/// The `clear_route` role: one host call per chat request.
struct ClearRoute;

impl Context for ClearRoute {}

impl HttpContext for ClearRoute {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        host::clear_route_cache();
        Action::Continue
    }
}

/// The `router` role: one per downstream request.
struct RouterRequest {
    max_body_bytes: usize,
    /// Set when the filter answered locally: the response phase then has nothing to do.
    answered: bool,
    decision: Option<flow::Decision<Rc<Table>>>,
    /// The client's `:path`, kept from the headers callback (Envoy allows reading a
    /// header map only in its own callback).
    path: String,
    num_retries: Option<usize>,
    /// The routed request's id (in the attempt state) and table, and whether the
    /// client got response headers: see `unanswered`.
    routed: Option<(u64, Rc<Table>)>,
    responded: bool,
}

impl RouterRequest {
    fn new(max_body_bytes: usize, num_retries: Option<usize>) -> Self {
        Self {
            max_body_bytes,
            answered: false,
            decision: None,
            path: String::new(),
            num_retries,
            routed: None,
            responded: false,
        }
    }

    fn reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str) -> Action {
        self.answered = true;
        let mut all = vec![JSON];
        all.extend_from_slice(headers);
        host::send_response(status, &all, body.as_bytes());
        Action::Pause
    }

    fn fail(&mut self, e: &RouterError) -> Action {
        self.reply(e.status, &[], &e.to_json())
    }
}

impl Context for RouterRequest {
    /// The request is over: its unanswered attempts count against their channels
    /// if the client was still waiting (it got response headers), not if it left.
    fn on_done(&mut self) -> bool {
        if let Some((id, table)) = self.routed.take() {
            for (channel, model) in unanswered::take(id, self.responded) {
                health::record(&channel, &model, classify(0), None, &table.routing.health);
                perf::record(&channel, &model, false, None);
            }
        }
        true
    }
}

impl HttpContext for RouterRequest {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let path = host::request_header(":path").unwrap_or_default();
        let method = host::request_header(":method").unwrap_or_default();
        let table = current_table();
        match flow::on_request_headers(
            table.as_deref(),
            &method,
            &path,
            end_of_stream,
            self.max_body_bytes,
            host::request_header,
        ) {
            HeadersVerdict::Reply(status, body) => self.reply(status, &[], &body),
            HeadersVerdict::WaitForBody => {
                // Wait for the whole body (needs allow_on_headers_stop_iteration).
                self.path = path;
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.answered {
            return Action::Pause;
        }
        if body_size > self.max_body_bytes {
            return self.fail(&RouterError::too_large(self.max_body_bytes));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(table) = current_table() else {
            return self.fail(&RouterError::unavailable("table_not_loaded", "the router has no channel table"));
        };
        let body = host::request_body(0, body_size).unwrap_or_default();
        // The clock matters only to channels with health state (a host call saved
        // on the common path).
        let now = if health::with(|h| h.entries.is_empty()) { 0 } else { host::now_ms() };
        let rotation = ROTATION.with(|r| {
            let v = r.get().wrapping_add(1);
            r.set(v);
            v
        });
        let routed = health::with(|h| perf::with(|p| flow::route_body(table, &self.path, &body, h, p, now, rotation)));
        let routed = match routed {
            Ok(r) => r,
            Err(e) => return self.fail(&e),
        };
        health::start_probes(&routed.probes, &routed.decision.table.routing.health);
        if !host::set_filter_state(ATTEMPTS_STATE, routed.plan_text.as_bytes()) {
            return self.fail(&RouterError::new(
                500,
                "server_error",
                "internal_error",
                "could not record the attempt plan",
            ));
        }
        host::set_request_header(PLAN_HEADER, Some(&priority_groups_header(routed.decision.clusters())));
        // Past the end of the plan the cluster specifier repeats the last group: cap
        // the retries at the plan, unless the route's own count already does.
        if self.num_retries != Some(routed.retries) {
            host::set_request_header("x-envoy-max-retries", Some(&routed.retries.to_string()));
        }
        self.routed = Some((routed.request_id, routed.decision.table.clone()));
        self.decision = Some(routed.decision);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self.answered {
            return Action::Continue;
        }
        let Some(d) = self.decision.take() else {
            return Action::Continue;
        };
        self.responded = true;
        // With debug headers on, one read and one write of the whole map cost less
        // than two reads and six adds (each host call costs a few microseconds).
        let mut all = if d.table.routing.debug_headers { Some(host::response_headers()) } else { None };
        let header = |all: &Option<Vec<(String, Vec<u8>)>>, name: &str| -> Option<String> {
            match all {
                Some(map) => map.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
                None => host::response_header(name),
            }
        };
        let status = flow::status_code(header(&all, ":status").as_deref());
        let context_exceeded = status == 503 && header(&all, CONTEXT_EXCEEDED_HEADER).is_some();
        let tried = header(&all, "x-envoy-attempt-count").and_then(|s| s.parse::<usize>().ok());
        let (verdict, outcome) = flow::on_response_headers(&d, status, context_exceeded, tried);
        metrics::record(&d.requested, &outcome.channels, outcome.failed);
        match verdict {
            ResponseVerdict::Replace(status, headers, body) => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.reply(status, &headers, &body)
            }
            ResponseVerdict::Pass(debug) => {
                if let (Some(map), Some(debug)) = (all.as_mut(), debug) {
                    debug.each(|k, v| map.push((k.to_string(), v.as_bytes().to_vec())));
                    host::set_response_headers(map);
                }
                Action::Continue
            }
        }
    }
}

/// The `attempt` role: one per upstream attempt.
#[derive(Default)]
struct AttemptRequest {
    /// Model span and the literal to splice in, when this attempt changes `model`.
    splice: Option<((usize, usize), String)>,
    /// This attempt's channel and model, for health bookkeeping.
    target: Option<(String, String)>,
    /// Response headers arrived; without them the attempt ended unanswered.
    answered: bool,
    table: Option<Rc<Table>>,
    /// A 400 held back to see whether it is a context-length error.
    held_400: bool,
    /// When this attempt left (ms), when it is timed (see `perf::should_time`).
    started_ms: Option<u64>,
    /// The request this attempt belongs to (see `unanswered`).
    request_id: u64,
}

impl AttemptRequest {
    /// A held 400: if the provider says the context was too long, turn it into a
    /// retriable 503 marked for the router filter; else let it through as it is.
    /// (The next attempt is the plan's next candidate. An attempt cannot be skipped
    /// from here: Envoy 1.40 sends an upstream filter's local reply to the client
    /// instead of retrying.)
    fn on_held_400_body(&mut self, body_size: usize) {
        self.held_400 = false;
        let body = host::response_body(body_size).unwrap_or_default();
        if !router_core::health::is_context_length_error(&body) {
            return;
        }

        if host::try_set_response_header(":status", "503")
            && host::try_set_response_header(CONTEXT_EXCEEDED_HEADER, "1")
        {
            return;
        }
        host::log(LogLevel::Warn, "smart-router: could not mark a context-length error for failover");
    }
}

impl Context for AttemptRequest {
    /// Envoy calls this once per attempt (`on_log` is not called for upstream filters).
    fn on_done(&mut self) -> bool {
        // Refused, reset or timed out before any response: the router role decides,
        // when the request ends, whether that was the channel or the client leaving.
        if !self.answered {
            if let Some((channel, model)) = &self.target {
                unanswered::add(self.request_id, channel, model);
            }
        }
        true
    }
}

impl HttpContext for AttemptRequest {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let Some(raw) = host::filter_state(ATTEMPTS_STATE) else {
            return Action::Continue;
        };
        let state = match std::str::from_utf8(&raw).map_err(|_| ()).and_then(|s| AttemptView::parse(s).map_err(|_| ()))
        {
            Ok(s) => s,
            Err(()) => {
                host::log(LogLevel::Error, "smart-router: attempt state unreadable; sending the request unchanged");
                return Action::Continue;
            }
        };
        if current_table().is_none() {
            refresh_table();
        }
        let Some(table) = current_table() else {
            return Action::Continue;
        };
        // Envoy numbers attempts from 1 (include_request_attempt_count).
        let n = host::request_header("x-envoy-attempt-count").and_then(|s| s.parse::<usize>().ok()).unwrap_or(1);
        let rw = match flow::attempt_rewrite(&state, n, &table) {
            Ok(rw) => rw,
            Err(e) => {
                host::log(LogLevel::Warn, &format!("smart-router: {e}; sending the request unchanged"));
                return Action::Continue;
            }
        };
        host::set_request_header(":authority", Some(&rw.channel.authority));
        if let Some(path) = &rw.path {
            host::set_request_header(":path", Some(path));
        }
        // The client's own credentials never reach a provider: the route drops
        // `x-api-key`, and `authorization` is overwritten or removed here.
        if rw.remove_authorization {
            host::set_request_header("authorization", None);
        }
        if let Some((name, value)) = rw.auth {
            host::set_request_header(name, Some(value));
        }
        if let Some(len) = rw.content_length {
            host::set_request_header("content-length", Some(&len.to_string()));
        }
        self.started_ms = perf::should_time(&rw.channel.id, &rw.model).then(host::now_ms);
        self.target = Some((rw.channel.id.clone(), rw.model));
        self.splice = rw.splice;
        self.table = Some(table.clone());
        self.request_id = state.request_id;
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.held_400 {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.on_held_400_body(body_size);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.answered = true;
        let (Some((channel, model)), Some(table)) = (&self.target, &self.table) else {
            return Action::Continue;
        };
        let status = flow::status_code(host::response_header(":status").as_deref());
        if status == 400 && !end_of_stream {
            // Envoy does not retry a 400; a context-length 400 should go to a channel
            // with a larger context. Hold the headers until the body tells which.
            self.held_400 = true;
            return Action::Pause;
        }
        let class = classify(status);
        let retry_after =
            if status == 429 { flow::retry_after_ms(host::response_header("retry-after").as_deref()) } else { None };
        health::record(channel, model, class, retry_after, &table.routing.health);
        if router_core::score::counts_for_speed(class) {
            let ttfb = self.started_ms.map(|t| host::now_ms().saturating_sub(t) as f64);
            perf::record(channel, model, class.is_none(), ttfb);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        let Some(((start, end), literal)) = &self.splice else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        // Only the bytes before `model` are copied into the VM: Envoy can replace a
        // body only from offset 0, so drain through the old value and prepend.
        let mut prefix = if *start > 0 { host::request_body(0, *start).unwrap_or_default() } else { Vec::new() };
        if prefix.len() != *start {
            host::log(LogLevel::Error, "smart-router: request body shorter than expected; sending it unchanged");
            return Action::Continue;
        }
        prefix.extend_from_slice(literal.as_bytes());
        if !host::replace_request_body_prefix(*end, &prefix) {
            host::log(LogLevel::Error, "smart-router: could not rewrite the request body");
        }
        self.splice = None;
        Action::Continue
    }
}
