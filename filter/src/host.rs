//! Every call from the filter into Envoy goes through here, and [`WasmHost`] is
//! the roles' [`Host`] on top of them.
//!
//! The proxy-wasm SDK panics when Envoy answers a host call with a status it does not
//! expect, and a panic takes the VM down. Keeping the calls in one place makes them
//! easy to audit: each is made only in a callback where Envoy 1.40 supports it
//! (a header map is read only in its own headers callback; a body is replaced
//! only from offset 0). Errors become `None`/`false`, never a panic. Every host
//! call also costs CPU on Envoy's side (a few microseconds in V8), so the host
//! makes as few as it can.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};
use router_core::roles::config::{PLAN_FILTER_STATE, PLAN_HEADER};
use router_core::roles::Host;
use router_core::wire::priority_groups_header;

use crate::vm::Vm;

/// Header values are read as bytes: the SDK's string variant panics on a value that
/// is not UTF-8, and a client (or a provider) can send one.
fn header(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn set_header(map: MapType, name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(map, name, value);
}

fn get_buffer(kind: BufferType, start: usize, len: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(kind, start, len).ok().flatten()
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
}

pub fn shared_data(key: &str) -> Option<Vec<u8>> {
    hostcalls::get_shared_data(key).ok().and_then(|(v, _)| v)
}

/// The value and its CAS token (None when the key does not exist yet).
pub fn shared_data_cas(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Write only if nobody wrote since `cas` was read; false on a lost race.
pub fn set_shared_data_cas(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

pub fn set_shared_data(key: &str, value: &[u8]) -> bool {
    hostcalls::set_shared_data(key, Some(value), None).is_ok()
}

/// Nanoseconds since the epoch, from Envoy's clock.
pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch, from Envoy's clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn set_tick_period(period: Duration) {
    let _ = hostcalls::set_tick_period(period);
}

pub fn http_call(cluster: &str, headers: &[(&str, &str)], body: Option<&[u8]>, timeout: Duration) -> Option<u32> {
    hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, vec![], timeout).ok()
}

pub fn http_call_status() -> Option<u16> {
    header(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok())
}

pub fn http_call_header(name: &str) -> Option<String> {
    header(MapType::HttpCallResponseHeaders, name)
}

pub fn http_call_body(len: usize) -> Option<Vec<u8>> {
    get_buffer(BufferType::HttpCallResponseBody, 0, len)
}

pub fn define_metric(name: &str, histogram: bool) -> Option<u32> {
    hostcalls::define_metric(if histogram { MetricType::Histogram } else { MetricType::Counter }, name).ok()
}

pub fn increment(metric: u32, by: i64) {
    let _ = hostcalls::increment_metric(metric, by);
}

pub fn record(metric: u32, value: u64) {
    let _ = hostcalls::record_metric(metric, value);
}

pub fn register_queue(name: &str) -> Option<u32> {
    hostcalls::register_shared_queue(name).ok()
}

pub fn resolve_queue(vm_id: &str, name: &str) -> Option<u32> {
    hostcalls::resolve_shared_queue(vm_id, name).ok().flatten()
}

pub fn enqueue(queue: u32, value: &[u8]) -> bool {
    hostcalls::enqueue_shared_queue(queue, Some(value)).is_ok()
}

pub fn dequeue(queue: u32) -> Option<Vec<u8>> {
    hostcalls::dequeue_shared_queue(queue).ok().flatten()
}

/// Envoy's `clear_route_cache` foreign function: the route is resolved again.
pub fn clear_route_cache() -> bool {
    hostcalls::call_foreign_function("clear_route_cache", None).is_ok()
}

// Raw host call for the place where Envoy may answer with a status the SDK
// treats as fatal: the result is checked here instead.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> proxy_wasm::types::Status;
}

/// Replace a response header, reporting whether Envoy accepted it. Used from the
/// response body callback, where Envoy may refuse header access.
fn try_set_response_header(name: &str, value: &str) -> bool {
    // SAFETY: pointers and lengths come from live &str values for the duration of
    // the call; Envoy copies the data before returning.
    let status = unsafe {
        proxy_replace_header_map_value(
            MapType::HttpResponseHeaders,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    status == proxy_wasm::types::Status::Ok
}

/// One hook's view of its stream. Made per hook: it knows the body size Envoy
/// passed to the body callback, the route's retry count, and whether the
/// response headers are read and written as one map (the router role, when it
/// adds debug headers: one read and one write of the whole map cost less than a
/// read per header and an add per debug header).
pub struct WasmHost {
    vm: Vm,
    body_size: usize,
    num_retries: Option<usize>,
    whole_response_map: bool,
    response: OnceCell<Vec<(String, Vec<u8>)>>,
    response_changed: bool,
}

impl WasmHost {
    pub fn new(body_size: usize) -> Self {
        Self {
            vm: Vm,
            body_size,
            num_retries: None,
            whole_response_map: false,
            response: OnceCell::new(),
            response_changed: false,
        }
    }

    /// The router role's host: it knows the route's retry count, and reads and
    /// writes the response headers as one map when debug headers are on.
    pub fn for_router(body_size: usize, num_retries: Option<usize>, whole_response_map: bool) -> Self {
        Self { num_retries, whole_response_map, ..Self::new(body_size) }
    }

    fn response_map(&self) -> &Vec<(String, Vec<u8>)> {
        self.response.get_or_init(|| hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default())
    }

    /// Write back what the hook changed (call once, at the end of the hook).
    pub fn finish(mut self) {
        if !self.response_changed {
            return;
        }
        if let Some(map) = self.response.take() {
            let pairs: Vec<(&str, &[u8])> = map.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let _ = hostcalls::set_map_bytes(MapType::HttpResponseHeaders, pairs);
        }
    }
}

impl Host for WasmHost {
    type Shared = Vm;

    fn shared(&self) -> &Vm {
        &self.vm
    }

    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        header(MapType::HttpRequestHeaders, name).map(Cow::Owned)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set_header(MapType::HttpRequestHeaders, name, value);
    }

    fn with_request_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&get_buffer(BufferType::HttpRequestBody, 0, self.body_size).unwrap_or_default())
    }

    fn edit_request_body(&mut self, edits: &[((usize, usize), String)]) -> bool {
        // Only the bytes through the last edit are copied into the VM: Envoy can
        // replace a body only from offset 0, so drain that prefix and prepend it
        // edited.
        let end = edits.last().map_or(0, |((_, end), _)| *end);
        let prefix = if end > 0 { get_buffer(BufferType::HttpRequestBody, 0, end) } else { Some(Vec::new()) };
        let Some(edited) = prefix.filter(|p| p.len() == end).and_then(|p| router_core::flow::edited_prefix(&p, edits))
        else {
            return false;
        };
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, end, &edited).is_ok()
    }

    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        if !self.whole_response_map {
            return header(MapType::HttpResponseHeaders, name).map(Cow::Owned);
        }
        let (_, v) = self.response_map().iter().find(|(k, _)| k == name)?;
        Some(String::from_utf8_lossy(v))
    }

    fn set_response_header(&mut self, name: &str, value: &str) -> bool {
        try_set_response_header(name, value)
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        if !self.whole_response_map {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
            return;
        }
        self.response_map();
        if let Some(map) = self.response.get_mut() {
            map.push((name.to_string(), value.as_bytes().to_vec()));
            self.response_changed = true;
        }
    }

    fn with_response_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&get_buffer(BufferType::HttpResponseBody, 0, self.body_size).unwrap_or_default())
    }

    fn replace_response_body(&mut self, body: &[u8]) -> bool {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, self.body_size, body).is_ok()
    }

    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
        let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body.as_bytes()));
    }

    fn deliver_plan<'a>(&mut self, plan: &str, clusters: impl Iterator<Item = &'a str>, retries: usize) -> bool {
        // The attempt role reads the plan from filter state; Envoy's
        // `priority_group` specifier reads the cluster list from metadata, which
        // `header_to_metadata` makes of this header (wasm cannot write metadata).
        if hostcalls::set_property(vec![PLAN_FILTER_STATE], Some(plan.as_bytes())).is_err() {
            return false;
        }
        set_header(MapType::HttpRequestHeaders, PLAN_HEADER, Some(&priority_groups_header(clusters)));
        // Past the end of the plan the specifier repeats the last group: cap the
        // retries at the plan, unless the route's own count already does.
        if self.num_retries != Some(retries) {
            set_header(MapType::HttpRequestHeaders, "x-envoy-max-retries", Some(itoa::Buffer::new().format(retries)));
        }
        true
    }

    fn plan_text(&self) -> Option<Cow<'_, str>> {
        let raw = hostcalls::get_property(vec![PLAN_FILTER_STATE]).ok().flatten()?;
        String::from_utf8(raw).ok().map(Cow::Owned)
    }

    fn attempt_number(&self) -> Option<usize> {
        // (include_request_attempt_count: Envoy numbers attempts from 1.)
        header(MapType::HttpRequestHeaders, "x-envoy-attempt-count").and_then(|s| s.trim().parse().ok())
    }

    fn attempts_made(&self) -> Option<usize> {
        self.response_header("x-envoy-attempt-count").and_then(|s| s.trim().parse().ok())
    }
}
