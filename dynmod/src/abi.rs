//! The part of Envoy's dynamic-module C ABI (`source/extensions/dynamic_modules/abi/abi.h`,
//! ABI "v0.1.0", Envoy 1.40) this module uses, declared by hand.
//!
//! Envoy resolves callbacks by name when it loads the module and does not check
//! types, so each declaration must match Envoy's exactly. The hooks this module
//! exports are in `lib.rs`; Envoy refuses a module that lacks any required hook.

#![allow(non_camel_case_types, dead_code)]
// Variant names follow the C header's.
#![allow(clippy::enum_variant_names)]

use std::ffi::c_void;

pub type EnvoyFilter = *mut c_void;
pub type EnvoyFilterConfig = *mut c_void;

/// Bytes owned by Envoy, valid until the end of the current hook.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const NULL: Self = Self { ptr: std::ptr::null(), length: 0 };

    /// # Safety
    /// `ptr` must be null or valid for `length` bytes for the returned lifetime.
    pub unsafe fn as_slice<'a>(&self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(self.ptr, self.length))
    }
}

/// Bytes owned by the module, valid for the duration of the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyHttpHeader {
    pub const NULL: Self =
        Self { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
}

impl ModuleBuffer {
    pub const NULL: Self = Self { ptr: std::ptr::null(), length: 0 };

    pub fn of(bytes: &[u8]) -> Self {
        Self { ptr: bytes.as_ptr(), length: bytes.len() }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HeaderType {
    RequestHeader = 0,
    RequestTrailer = 1,
    ResponseHeader = 2,
    ResponseTrailer = 3,
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    ReceivedRequestBody = 0,
    BufferedRequestBody = 1,
    ReceivedResponseBody = 2,
    BufferedResponseBody = 3,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
    Off = 6,
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MetricsResult {
    Success = 0,
    MetricNotFound = 1,
    InvalidLabels = 2,
    Frozen = 3,
}

/// Hook statuses (`on_http_filter_request_headers_status` and friends).
pub mod status {
    pub const HEADERS_CONTINUE: u32 = 0;
    pub const HEADERS_STOP_ITERATION: u32 = 1;
    pub const BODY_CONTINUE: u32 = 0;
    pub const BODY_STOP_AND_BUFFER: u32 = 1;
    pub const TRAILERS_CONTINUE: u32 = 0;
    pub const LOCAL_REPLY_CONTINUE: u32 = 0;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub enum MetadataSource {
    Dynamic = 0,
    Route = 1,
    Cluster = 2,
    Host = 3,
    HostLocality = 4,
}

/// `upstream.request_attempt_count` among the ABI's attribute ids: how many
/// attempts the router has started (1 for the first; a retry is counted before
/// its cluster is chosen).
pub const ATTEMPT_COUNT_ATTRIBUTE: u32 = 53;

/// Context Envoy passes to one cluster-specifier `select` call.
pub type SpecifierContext = *mut c_void;

extern "C" {
    // Cluster specifier (`envoy.router.cluster_specifier_plugin.dynamic_modules`).
    pub fn envoy_dynamic_module_callback_cluster_specifier_get_dynamic_metadata(
        context: SpecifierContext,
        filter_name: ModuleBuffer,
        path: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_cluster_specifier_get_request_header_value(
        context: SpecifierContext,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        total_count: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_cluster_specifier_get_attribute_int(
        context: SpecifierContext,
        attribute_id: u32,
        result: *mut u64,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_cluster_specifier_set_cluster_name(
        context: SpecifierContext,
        cluster_name: ModuleBuffer,
    );
    /// Selects a route-action override declared in the specifier's configuration.
    pub fn envoy_dynamic_module_callback_cluster_specifier_set_route_action_override(
        context: SpecifierContext,
        name: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyFilter,
        header_type: HeaderType,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    /// Appends a value (keeps existing ones): cheaper than set, which removes first.
    pub fn envoy_dynamic_module_callback_http_get_headers_size(filter: EnvoyFilter, kind: HeaderType) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyFilter,
        kind: HeaderType,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyFilter,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyFilter,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyFilter,
        status_code: u32,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_get_body_size(filter: EnvoyFilter, body_type: BodyType) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: EnvoyFilter, body_type: BodyType) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyFilter,
        body_type: BodyType,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter: EnvoyFilter,
        body_type: BodyType,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter: EnvoyFilter,
        body_type: BodyType,
        number_of_bytes: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: EnvoyFilter) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter: EnvoyFilter) -> bool;

    /// Sets one string key of a dynamic-metadata namespace.
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: EnvoyFilter,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: EnvoyFilter,
        source: MetadataSource,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: EnvoyFilter,
        attribute_id: u32,
        result: *mut u64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: EnvoyFilter);
    /// Re-runs only the cached route's cluster selection (no route re-match).
    pub fn envoy_dynamic_module_callback_http_clear_route_cluster_cache(filter: EnvoyFilter);

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyFilterConfig,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyFilter,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyFilterConfig,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyFilterConfig,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        histogram_id: *mut usize,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: EnvoyFilterConfig,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// A handle that delivers `on_http_filter_config_scheduled` on Envoy's main thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: EnvoyFilterConfig) -> *mut c_void;
    /// Safe from any thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
}
