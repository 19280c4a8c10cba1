//! Smart AI Router as an Envoy dynamic module: a native shared library Envoy loads
//! with `envoy.filters.http.dynamic_modules`. It runs the same roles as the
//! proxy-wasm filter (`router_core::roles`), without V8: Envoy calls these
//! hooks directly, each callback into Envoy is a plain function call, and the module
//! writes the plan into dynamic metadata itself, so the wasm path's
//! `header_to_metadata` step and the extra route-clearing filter are not needed.
//!
//! Two roles, chosen by the filter configuration's `role`: `router` (the
//! downstream filter) and `attempt` (in the router's `upstream_http_filters`, once
//! per attempt). This crate forwards Envoy's hooks to them and gives them Envoy
//! through `host::ModuleHost` and `state::Process`; the module hands the plan to
//! Envoy as one dynamic-metadata string and asks Envoy to pick the route's
//! cluster again.
//!
//! The module is also the route's cluster specifier (`specifier`): it sends each
//! attempt to the cluster the plan names for it.
//!
//! The channel table, health and speed live in process memory shared by every
//! worker thread (`state`); one background thread talks to the control plane.
//! Every hook runs inside `catch_unwind`: a bug answers one request badly instead
//! of taking Envoy down.

mod abi;
mod envoy_log;
mod host;
mod metrics;
mod specifier;
mod state;

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi::{status, EnvoyBuffer, EnvoyFilter, EnvoyFilterConfig};
use host::ModuleHost;
use router_core::roles::config::{FilterConfig, RouterConfig};
use router_core::roles::{AttemptRole, RouterRole, Step};
use router_core::Table;

/// A filter config, as the module keeps it between `config_new` and `filter_new`.
enum ModuleConfig {
    Router { max_body_bytes: usize, config_envoy: usize },
    Attempt,
}

fn headers_status(step: Step) -> u32 {
    match step {
        Step::Continue => status::HEADERS_CONTINUE,
        Step::Stop => status::HEADERS_STOP_ITERATION,
    }
}

fn body_status(step: Step) -> u32 {
    match step {
        Step::Continue => status::BODY_CONTINUE,
        Step::Stop => status::BODY_STOP_AND_BUFFER,
    }
}

/// Envoy calls this once when it loads the module; the answer is the ABI version
/// this module was written against (Envoy warns on a mismatch).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    envoy_log::init();
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
        let config = match FilterConfig::from_json(raw) {
            Ok(c) => c,
            Err(e) => {
                log::error!("smart-router: bad dynamic module filter configuration: {e}");
                return None;
            }
        };
        match config {
            FilterConfig::Router(RouterConfig { clusters, max_body_bytes, control_plane, .. }) => {
                let Some(link) = control_plane else {
                    log::error!("smart-router: the module's router role needs control_plane (address and token)");
                    return None;
                };
                let process = state::process();
                process.set_known_clusters(clusters);
                process.start(link);
                // Stats can be defined only now (Envoy freezes creation afterwards).
                metrics::define(config_envoy);
                Some(ModuleConfig::Router { max_body_bytes, config_envoy: config_envoy as usize })
            }
            FilterConfig::Attempt(_) => Some(ModuleConfig::Attempt),
            other => {
                log::error!("smart-router: the dynamic module has no {other:?} role (that is the wasm filter's)");
                None
            }
        }
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
        let config = Box::from_raw(config as *mut ModuleConfig);
        if let ModuleConfig::Router { config_envoy, .. } = *config {
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
    log::error!("smart-router: the dynamic module has no per-route configuration");
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: *const c_void) {}

// (Each filter is one allocation already, `Box<Filter>`: boxing the router role
// too would add one per request to save memory the attempt role does not use.)
#[allow(clippy::large_enum_variant)]
enum Filter {
    Router(RouterRole<Arc<Table>>),
    Attempt(AttemptRole<Arc<Table>>),
}

/// # Safety
/// `config` is a pointer this module returned from `config_new`; Envoy keeps it
/// alive for as long as filters made from it exist.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: EnvoyFilter,
) -> *const c_void {
    let Some(config) = (config as *const ModuleConfig).as_ref() else {
        return std::ptr::null();
    };
    let filter = match config {
        ModuleConfig::Router { max_body_bytes, .. } => Filter::Router(RouterRole::new(*max_body_bytes)),
        ModuleConfig::Attempt => Filter::Attempt(AttemptRole::default()),
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
    let mut filter = Box::from_raw(filter as *mut Filter);
    let _ = catch_unwind(AssertUnwindSafe(move || match filter.as_mut() {
        Filter::Attempt(a) => a.on_done(),
        Filter::Router(r) => r.on_done(state::process()),
    }));
}

/// Run a hook on the module's filter object with its host; a panic answers
/// `fallback`.
unsafe fn with_filter<T>(
    envoy: EnvoyFilter,
    filter: *const c_void,
    fallback: T,
    f: impl FnOnce(&mut Filter, &mut ModuleHost) -> T,
) -> T {
    let Some(filter) = (filter as *mut Filter).as_mut() else {
        return fallback;
    };
    let mut host = ModuleHost::new(envoy);
    match catch_unwind(AssertUnwindSafe(|| f(filter, &mut host))) {
        Ok(v) => v,
        Err(_) => {
            log::error!("smart-router: internal error in the dynamic module (a bug); request passed on unchanged");
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
    with_filter(envoy, filter, status::HEADERS_CONTINUE, |f, host| {
        headers_status(match f {
            Filter::Router(r) => r.on_request_headers(host, end_of_stream),
            Filter::Attempt(a) => a.on_request_headers(host),
        })
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
    with_filter(envoy, filter, status::BODY_CONTINUE, |f, host| {
        body_status(match f {
            Filter::Router(r) => r.on_request_body(host, end_of_stream),
            Filter::Attempt(a) => a.on_request_body(host, end_of_stream),
        })
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
    with_filter(envoy, filter, status::HEADERS_CONTINUE, |f, host| {
        headers_status(match f {
            Filter::Router(r) => r.on_response_headers(host),
            Filter::Attempt(a) => a.on_response_headers(host, end_of_stream),
        })
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
    with_filter(envoy, filter, status::BODY_CONTINUE, |f, host| match f {
        Filter::Router(_) => status::BODY_CONTINUE,
        Filter::Attempt(a) => body_status(a.on_response_body(host, end_of_stream)),
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
