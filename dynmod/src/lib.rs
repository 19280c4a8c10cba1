//! Smart AI Router as an Envoy dynamic module: a native shared library Envoy loads
//! with `envoy.filters.http.dynamic_modules`. It makes the same decisions as the
//! proxy-wasm filter (both call `router_core::flow`), without V8: Envoy calls these
//! hooks directly, each callback into Envoy is a plain function call, and the module
//! writes the plan into dynamic metadata itself, so the wasm path's
//! `header_to_metadata` step and the extra route-clearing filter are not needed.
//!
//! Two roles, chosen by the filter configuration's `role`:
//! - `router` (downstream HTTP filter): answers `/v1/models`, `/health` and errors,
//!   buffers a chat request, plans its attempts, writes the plan into dynamic
//!   metadata and makes Envoy pick the route's cluster again. On the way back
//!   it adds debug headers, counts stats, and replaces a final failure with an
//!   OpenAI-shaped error.
//! - `attempt` (in the router's `upstream_http_filters`, once per attempt): rewrites
//!   the request for that attempt's channel, records the outcome for the breakers and
//!   the speed averages, and turns a context-length 400 into a retriable 503.
//!
//! The module is also the route's cluster specifier (`specifier`): it sends each
//! attempt to the cluster the plan names for it.
//!
//! The channel table, health and speed live in process memory shared by every
//! worker thread (`state`); one background thread talks to the control plane.
//! Every hook runs inside `catch_unwind`: a bug answers one request badly instead
//! of taking Envoy down.

mod abi;
mod cp_client;
mod host;
mod log;
mod metrics;
mod specifier;
mod state;
mod unanswered;

use std::borrow::Cow;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use abi::{status, EnvoyBuffer, EnvoyFilter, EnvoyFilterConfig, HeaderType};
use host::Host;
use router_core::flow::{self, HeadersVerdict, ResponseVerdict, CONTEXT_EXCEEDED_HEADER};
use router_core::health::classify;
use router_core::wire::AttemptView;
use router_core::{RouterError, Table};
use serde::Deserialize;

/// Dynamic-metadata namespace and key of the plan (an encoded `AttemptState`): the
/// router role writes it; the cluster specifier and the attempt role read it.
const METADATA_NAMESPACE: &str = "smart_router";
const ATTEMPTS_KEY: &str = "attempts";
const JSON: (&str, &str) = ("content-type", "application/json");
const REQ: HeaderType = HeaderType::RequestHeader;
const RESP: HeaderType = HeaderType::ResponseHeader;

#[derive(Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
enum FilterConfigDoc {
    Router {
        control_plane: String,
        token: String,
        #[serde(default = "default_poll_ms")]
        poll_ms: u64,
        #[serde(default)]
        clusters: Vec<String>,
        #[serde(default = "default_max_body")]
        max_body_bytes: usize,
        /// The route's retry count (the wasm filter reads it; the module caps
        /// retries through its cluster specifier's route-action overrides).
        #[serde(default, rename = "num_retries")]
        _num_retries: Option<usize>,
    },
    Attempt {},
}

fn default_poll_ms() -> u64 {
    500
}

fn default_max_body() -> usize {
    32 * 1024 * 1024
}

enum FilterConfig {
    Router { max_body_bytes: usize, config_envoy: usize },
    Attempt,
}

/// Envoy calls this once when it loads the module; the answer is the ABI version
/// this module was written against (Envoy warns on a mismatch).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    c"v0.1.0".as_ptr()
}

/// # Safety
/// Envoy passes buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyFilterConfig,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let made = catch_unwind(AssertUnwindSafe(|| {
        let raw = config.as_slice().unwrap_or_default();
        let doc: FilterConfigDoc = match serde_json::from_slice(raw) {
            Ok(d) => d,
            Err(e) => {
                log::error(&format!("smart-router: bad dynamic module filter configuration: {e}"));
                return None;
            }
        };
        Some(match doc {
            FilterConfigDoc::Router { control_plane, token, poll_ms, clusters, max_body_bytes, .. } => {
                let shared = state::shared();
                shared.set_known_clusters(clusters);
                shared.start(state::ControlPlane { address: control_plane, token, poll_ms });
                // Stats can be defined only now (Envoy freezes creation afterwards).
                metrics::define(config_envoy);
                FilterConfig::Router { max_body_bytes, config_envoy: config_envoy as usize }
            }
            FilterConfigDoc::Attempt {} => FilterConfig::Attempt,
        })
    }));
    match made {
        Ok(Some(c)) => Box::into_raw(Box::new(c)) as *const c_void,
        _ => std::ptr::null(),
    }
}

/// # Safety
/// `config` is a pointer this module returned from `config_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if !config.is_null() {
        let config = Box::from_raw(config as *mut FilterConfig);
        if let FilterConfig::Router { config_envoy, .. } = *config {
            metrics::forget(config_envoy as EnvoyFilterConfig);
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    // No per-route configuration: rejecting it tells the operator at load time.
    log::error("smart-router: the dynamic module has no per-route configuration");
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: *const c_void) {}

enum Filter {
    Router(RouterFilter),
    Attempt(AttemptFilter),
}

/// # Safety
/// `config` is a pointer this module returned from `config_new`; Envoy keeps it
/// alive for as long as filters made from it exist.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: EnvoyFilter,
) -> *const c_void {
    let Some(config) = (config as *const FilterConfig).as_ref() else {
        return std::ptr::null();
    };
    let filter = match config {
        FilterConfig::Router { max_body_bytes, .. } => Filter::Router(RouterFilter {
            max_body_bytes: *max_body_bytes,
            answered: false,
            waiting_for_body: false,
            decision: None,
            path: Cow::Borrowed(""),
            routed: None,
            responded: false,
        }),
        FilterConfig::Attempt => Filter::Attempt(AttemptFilter::default()),
    };
    Box::into_raw(Box::new(filter)) as *const c_void
}

/// # Safety
/// `filter` is a pointer this module returned from `filter_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    if filter.is_null() {
        return;
    }
    let filter = Box::from_raw(filter as *mut Filter);
    let _ = catch_unwind(AssertUnwindSafe(move || match *filter {
        Filter::Attempt(a) => a.finish(),
        Filter::Router(r) => r.finish(),
    }));
}

/// Run a hook on the module's filter object; a panic answers `fallback`.
unsafe fn with_filter<T>(filter: *const c_void, fallback: T, f: impl FnOnce(&mut Filter) -> T) -> T {
    let Some(filter) = (filter as *mut Filter).as_mut() else {
        return fallback;
    };
    match catch_unwind(AssertUnwindSafe(|| f(filter))) {
        Ok(v) => v,
        Err(_) => {
            log::error("smart-router: internal error in the dynamic module (a bug); request passed on unchanged");
            fallback
        }
    }
}

/// # Safety
/// Pointers come from Envoy and this module, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: EnvoyFilter,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    with_filter(filter, status::HEADERS_CONTINUE, |f| match f {
        Filter::Router(r) => r.on_request_headers(Host(envoy), end_of_stream),
        Filter::Attempt(a) => a.on_request_headers(Host(envoy)),
    })
}

/// # Safety
/// Pointers come from Envoy and this module, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: EnvoyFilter,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    with_filter(filter, status::BODY_CONTINUE, |f| match f {
        Filter::Router(r) => r.on_request_body(Host(envoy), end_of_stream),
        Filter::Attempt(a) => a.on_request_body(Host(envoy), end_of_stream),
    })
}

/// # Safety
/// Pointers come from Envoy and this module, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: EnvoyFilter,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    with_filter(filter, status::HEADERS_CONTINUE, |f| match f {
        Filter::Router(r) => r.on_response_headers(Host(envoy)),
        Filter::Attempt(a) => a.on_response_headers(Host(envoy), end_of_stream),
    })
}

/// # Safety
/// Pointers come from Envoy and this module, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: EnvoyFilter,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    with_filter(filter, status::BODY_CONTINUE, |f| match f {
        Filter::Router(_) => status::BODY_CONTINUE,
        Filter::Attempt(a) => a.on_response_body(Host(envoy), end_of_stream),
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_e: EnvoyFilter, _f: *const c_void) -> u32 {
    status::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_e: EnvoyFilter, _f: *const c_void) -> u32 {
    status::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_e: EnvoyFilter, _f: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _e: EnvoyFilter,
    _f: *const c_void,
    _code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    status::LOCAL_REPLY_CONTINUE
}

// Hooks Envoy requires although this module starts no callouts or streams and
// schedules nothing.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _e: EnvoyFilter,
    _f: *const c_void,
    _id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_size: usize,
    _chunks: *const c_void,
    _chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _e: EnvoyFilter,
    _f: *const c_void,
    _id: u64,
    _headers: *const c_void,
    _size: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _e: EnvoyFilter,
    _f: *const c_void,
    _id: u64,
    _data: *const c_void,
    _count: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _e: EnvoyFilter,
    _f: *const c_void,
    _id: u64,
    _trailers: *const c_void,
    _size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _e: EnvoyFilter,
    _f: *const c_void,
    _id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _e: EnvoyFilter,
    _f: *const c_void,
    _id: u64,
    _reason: u32,
) {
}

/// Envoy's main thread, when the background thread asked for a stats flush.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: EnvoyFilterConfig,
    _config: *const c_void,
    _event_id: u64,
) {
    let _ = catch_unwind(|| metrics::flush(config_envoy));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_e: EnvoyFilter, _f: *const c_void, _id: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _e: EnvoyFilter,
    _f: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _e: EnvoyFilter,
    _f: *const c_void,
) {
}

/// The `router` role: one per downstream request.
struct RouterFilter {
    max_body_bytes: usize,
    /// Answered locally: the rest of the exchange has nothing to do.
    answered: bool,
    waiting_for_body: bool,
    decision: Option<flow::Decision<Arc<Table>>>,
    path: Cow<'static, str>,
    /// The routed request's id (in the attempt state) and table, and whether the
    /// client got response headers: see `unanswered`.
    routed: Option<(u64, Arc<Table>)>,
    responded: bool,
}

impl RouterFilter {
    fn reply(&mut self, host: Host, status: u16, headers: &[(&str, &str)], body: &str) -> u32 {
        self.answered = true;
        let mut all = vec![JSON];
        all.extend_from_slice(headers);
        host.send_response(status, &all, body.as_bytes());
        status::HEADERS_STOP_ITERATION
    }

    fn fail(&mut self, host: Host, e: &RouterError) -> u32 {
        self.reply(host, e.status, &[], &e.to_json())
    }

    fn on_request_headers(&mut self, host: Host, end_of_stream: bool) -> u32 {
        // One read of the whole map: this hook needs up to five headers.
        let headers = host.headers(REQ);
        let path = headers.get(":path").unwrap_or_default();
        let method = headers.get(":method").unwrap_or_default();
        let table = state::shared().table();
        let verdict =
            flow::on_request_headers(table.as_deref(), method, path, end_of_stream, self.max_body_bytes, |name| {
                headers.get(name)
            });
        // (The usual path needs no copy.)
        let path = if path == flow::CHAT_PATH { Cow::Borrowed(flow::CHAT_PATH) } else { Cow::Owned(path.to_string()) };
        let has_api_key = headers.has("x-api-key");
        // (The list points into Envoy's map: gone before any header changes.)
        drop(headers);
        match verdict {
            HeadersVerdict::Reply(status, body) => self.reply(host, status, &[], &body),
            HeadersVerdict::WaitForBody => {
                // A client's own credential never reaches a provider: the attempt
                // role overwrites or removes `authorization`, and `x-api-key` goes
                // here (the wasm chain has a route rule for it).
                // (A lookup costs Envoy far less than a removal that finds nothing.)
                if has_api_key {
                    host.set_header(REQ, "x-api-key", None);
                }
                self.path = path;
                self.waiting_for_body = true;
                status::HEADERS_STOP_ITERATION
            }
        }
    }

    fn on_request_body(&mut self, host: Host, end_of_stream: bool) -> u32 {
        if self.answered {
            return status::BODY_STOP_AND_BUFFER;
        }
        if !self.waiting_for_body {
            return status::BODY_CONTINUE;
        }
        if !end_of_stream {
            // Envoy's own buffer limit (the route's) answers 413 past it.
            return status::BODY_STOP_AND_BUFFER;
        }
        self.waiting_for_body = false;
        let shared = state::shared();
        let Some(table) = shared.table() else {
            self.fail(host, &RouterError::unavailable("table_not_loaded", "the router has no channel table"));
            return status::BODY_STOP_AND_BUFFER;
        };
        let routed = host.with_whole_body(true, |body| {
            if body.len() > self.max_body_bytes {
                return Err(RouterError::too_large(self.max_body_bytes));
            }
            let now = if shared.health_is_empty() { 0 } else { state::now_ms() };
            let rotation = shared.next_rotation();
            shared.with_live(|h, p| flow::route_body(table, &self.path, body, h, p, now, rotation)).unwrap_or_else(
                || Err(RouterError::new(500, "server_error", "internal_error", "router state unavailable")),
            )
        });
        let routed = match routed {
            Ok(r) => r,
            Err(e) => {
                self.fail(host, &e);
                return status::BODY_STOP_AND_BUFFER;
            }
        };
        shared.start_probes(&routed.probes, &routed.decision.table.routing.health);
        host.set_metadata_string(METADATA_NAMESPACE, ATTEMPTS_KEY, &routed.plan_text);
        // (The cluster specifier also caps Envoy's retries at the plan.)
        // The route's cluster was chosen before the plan existed: the specifier
        // answers again, now from the plan.
        specifier::with_plan_handed_over(&routed.plan_text, || host.refresh_cluster());
        self.routed = Some((routed.request_id, routed.decision.table.clone()));
        self.decision = Some(routed.decision);
        status::BODY_CONTINUE
    }

    fn on_response_headers(&mut self, host: Host) -> u32 {
        if self.answered {
            return status::HEADERS_CONTINUE;
        }
        let Some(d) = self.decision.take() else {
            return status::HEADERS_CONTINUE;
        };
        self.responded = true;
        let status = host.header_with(RESP, ":status", |s| flow::status_code(Some(s))).unwrap_or(0);
        let context_exceeded = status == 503 && host.header_with(RESP, CONTEXT_EXCEEDED_HEADER, |_| ()).is_some();
        // The stream's attempt count: no header lookup (0 when Envoy answered before
        // any attempt).
        let tried =
            host.attribute_int(abi::ATTEMPT_COUNT_ATTRIBUTE).and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0);
        let (verdict, outcome) = flow::on_response_headers(&d, status, context_exceeded, tried);
        metrics::record(&d.requested, &outcome.channels, outcome.failed);
        match verdict {
            ResponseVerdict::Replace(status, headers, body) => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.reply(host, status, &headers, &body)
            }
            ResponseVerdict::Pass(debug) => {
                if let Some(debug) = debug {
                    debug.each(|name, value| {
                        host.add_header(RESP, name, value);
                    });
                }
                status::HEADERS_CONTINUE
            }
        }
    }

    /// The request is over: its unanswered attempts count against their channels
    /// if the client was still waiting (it got response headers), not if it left.
    /// (Envoy destroys this filter after the attempts when it answered, and before
    /// the attempt in flight when the client left; the ledger handles both.)
    fn finish(self) {
        let Some((id, table)) = self.routed else {
            return;
        };
        let shared = state::shared();
        for (channel, model) in unanswered::take(id, self.responded) {
            shared.record_health(&channel, &model, classify(0), None, &table.routing.health);
            shared.record_perf(&channel, &model, false, None);
        }
    }
}

/// The `attempt` role: one per upstream attempt.
#[derive(Default)]
struct AttemptFilter {
    /// The body with this attempt's `model`, when it differs from the client's.
    splice: Option<((usize, usize), String)>,
    /// This attempt's channel and model, for health bookkeeping.
    /// (The channel by its handle in `table`: no copy of its id per attempt.)
    target: Option<(u32, String)>,
    table: Option<Arc<Table>>,
    /// Response headers arrived; without them the attempt ended unanswered.
    answered: bool,
    /// A 400 held back to see whether it is a context-length error.
    held_400: bool,
    started: Option<Instant>,
    /// The request this attempt belongs to (see `unanswered`).
    request_id: u64,
}

impl AttemptFilter {
    fn on_request_headers(&mut self, host: Host) -> u32 {
        let Some(raw) = host.metadata_str(METADATA_NAMESPACE, ATTEMPTS_KEY) else {
            return status::HEADERS_CONTINUE;
        };
        let Ok(state) = AttemptView::parse(raw) else {
            log::error("smart-router: attempt state unreadable; sending the request unchanged");
            return status::HEADERS_CONTINUE;
        };
        let Some(table) = state::shared().table() else {
            return status::HEADERS_CONTINUE;
        };
        // Envoy numbers attempts from 1.
        let n =
            host.attribute_int(abi::ATTEMPT_COUNT_ATTRIBUTE).and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(1);
        let rw = match flow::attempt_rewrite(&state, n, &table) {
            Ok(rw) => rw,
            Err(e) => {
                log::warn(&format!("smart-router: {e}; sending the request unchanged"));
                return status::HEADERS_CONTINUE;
            }
        };
        host.set_header(REQ, ":authority", Some(&rw.channel.authority));
        if let Some(path) = &rw.path {
            host.set_header(REQ, ":path", Some(path));
        }
        // The client's own credentials never reach a provider: the route drops
        // `x-api-key`, and `authorization` is overwritten or removed here.
        if rw.remove_authorization {
            host.set_header(REQ, "authorization", None);
        }
        if let Some((name, value)) = rw.auth {
            host.set_header(REQ, name, Some(value));
        }
        if let Some(len) = rw.content_length {
            host.set_header(REQ, "content-length", Some(&len.to_string()));
        }
        self.started = Some(Instant::now());
        self.target = Some((rw.channel_handle, rw.model));
        self.splice = rw.splice;
        self.table = Some(table);
        self.request_id = state.request_id;
        status::HEADERS_CONTINUE
    }

    fn on_request_body(&mut self, host: Host, end_of_stream: bool) -> u32 {
        let Some((span, literal)) = &self.splice else {
            return status::BODY_CONTINUE;
        };
        if !end_of_stream {
            return status::BODY_STOP_AND_BUFFER;
        }
        match host.with_whole_body(true, |body| flow::spliced(body, *span, literal)) {
            Some(body) => {
                if !host.replace_request_body(&body) {
                    log::error("smart-router: could not rewrite the request body");
                }
            }
            None => log::error("smart-router: request body shorter than expected; sending it unchanged"),
        }
        self.splice = None;
        status::BODY_CONTINUE
    }

    fn on_response_headers(&mut self, host: Host, end_of_stream: bool) -> u32 {
        self.answered = true;
        let (Some((channel, model)), Some(table)) = (&self.target, &self.table) else {
            return status::HEADERS_CONTINUE;
        };
        let Some(channel) = table.channel(*channel).map(|c| c.id.as_str()) else {
            return status::HEADERS_CONTINUE;
        };
        let status = host.header_with(RESP, ":status", |s| flow::status_code(Some(s))).unwrap_or(0);
        if status == 400 && !end_of_stream {
            // Envoy does not retry a 400; a context-length 400 should go to a channel
            // with a larger context. Hold the headers until the body tells which.
            self.held_400 = true;
            return status::HEADERS_STOP_ITERATION;
        }
        let class = classify(status);
        let retry_after = if status == 429 {
            host.header_with(RESP, "retry-after", |v| flow::retry_after_ms(Some(v))).flatten()
        } else {
            None
        };
        let shared = state::shared();
        shared.record_health(channel, model, class, retry_after, &table.routing.health);
        if router_core::score::counts_for_speed(class) {
            let ttfb = self.started.map(|t| t.elapsed().as_secs_f64() * 1000.0);
            shared.record_perf(channel, model, class.is_none(), ttfb);
        }
        status::HEADERS_CONTINUE
    }

    fn on_response_body(&mut self, host: Host, end_of_stream: bool) -> u32 {
        if !self.held_400 {
            return status::BODY_CONTINUE;
        }
        if !end_of_stream {
            return status::BODY_STOP_AND_BUFFER;
        }
        self.held_400 = false;
        if host.with_whole_body(false, router_core::health::is_context_length_error)
            && !(host.set_header(RESP, ":status", Some("503"))
                && host.set_header(RESP, CONTEXT_EXCEEDED_HEADER, Some("1")))
        {
            log::warn("smart-router: could not mark a context-length error for failover");
        }
        status::BODY_CONTINUE
    }

    /// The attempt is over (Envoy destroys the filter). Refused, reset or timed out
    /// before any response: the router role decides, when the request ends,
    /// whether that was the channel or the client leaving.
    fn finish(self) {
        if self.answered {
            return;
        }
        if let (Some((channel, model)), Some(table)) = (&self.target, &self.table) {
            if let Some(channel) = table.channel(*channel) {
                unanswered::add(self.request_id, &channel.id, model);
            }
        }
    }
}
