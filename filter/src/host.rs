//! Every call from the filter into Envoy goes through here.
//!
//! The proxy-wasm SDK panics when Envoy answers a host call with a status it does not
//! expect, and a panic takes the VM down. Keeping the calls in one place makes them
//! easy to audit: each is made only in a callback where Envoy 1.40 supports it
//! (a header map is read only in its own headers callback; a body is
//! replaced only from offset 0). Errors become `None`/`false`, never a panic. Every
//! host call also costs CPU on Envoy's side, so callers make as few as they can.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Header values are read as bytes: the SDK's string variant panics on a value that
/// is not UTF-8, and a client (or a provider) can send one.
fn header(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

pub fn request_header(name: &str) -> Option<String> {
    header(MapType::HttpRequestHeaders, name)
}

/// Set (or with `None` remove) a request header.
pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn response_header(name: &str) -> Option<String> {
    header(MapType::HttpResponseHeaders, name)
}

pub fn request_body(start: usize, len: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, start, len).ok().flatten()
}

/// Replace the first `drain` bytes of the buffered request body with `prefix`.
/// Envoy supports replacing only at offset 0 (drain + prepend).
pub fn replace_request_body_prefix(drain: usize, prefix: &[u8]) -> bool {
    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, drain, prefix).is_ok()
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten()
}

pub fn send_response(status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body));
}

/// Filter state `wasm.<name>`, visible to later filters, the per-attempt upstream
/// filter and access logs.
pub fn set_filter_state(name: &str, value: &[u8]) -> bool {
    hostcalls::set_property(vec![name], Some(value)).is_ok()
}

pub fn filter_state(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_property(vec![name]).ok().flatten()
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

/// Milliseconds since the epoch, from Envoy's clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn set_shared_data(key: &str, value: &[u8]) -> bool {
    hostcalls::set_shared_data(key, Some(value), None).is_ok()
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
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, len).ok().flatten()
}

pub fn define_counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

pub fn increment(metric: u32, by: i64) {
    let _ = hostcalls::increment_metric(metric, by);
}

// Raw host calls for the places where Envoy may answer with a status the SDK
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
pub fn try_set_response_header(name: &str, value: &str) -> bool {
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

pub fn response_body(len: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpResponseBody, 0, len).ok().flatten()
}

/// Envoy's `clear_route_cache` foreign function: the route is resolved again.
pub fn clear_route_cache() -> bool {
    hostcalls::call_foreign_function("clear_route_cache", None).is_ok()
}

/// All response headers in one host call (names are ASCII tokens: Envoy's codecs
/// reject anything else; values stay bytes).
pub fn response_headers() -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default()
}

/// Replace all response headers in one host call.
pub fn set_response_headers(headers: &[(String, Vec<u8>)]) {
    let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    let _ = hostcalls::set_map_bytes(MapType::HttpResponseHeaders, pairs);
}
