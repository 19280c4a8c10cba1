//! Safe wrappers over the Envoy callbacks a filter makes. Each takes the filter's
//! Envoy pointer, which Envoy guarantees valid until the filter is destroyed; the
//! buffers Envoy returns are copied or used before the hook returns.

use crate::abi::{
    self, BodyType, EnvoyBuffer, EnvoyFilter, HeaderType, MetadataSource, ModuleBuffer, ModuleHttpHeader,
};

#[derive(Clone, Copy)]
pub struct Host(pub EnvoyFilter);

impl Host {
    fn header_ref(&self, kind: HeaderType, name: &str) -> Option<&[u8]> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: valid filter pointer (see module docs); `out` is written by Envoy.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: Envoy's buffer is valid until the end of this hook; callers use or
        // copy it before returning and before setting a header.
        if found {
            unsafe { out.as_slice() }
        } else {
            None
        }
    }

    pub fn header(&self, kind: HeaderType, name: &str) -> Option<String> {
        self.header_ref(kind, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn header_is(&self, kind: HeaderType, name: &str) -> bool {
        self.header_ref(kind, name).is_some()
    }

    pub fn header_number(&self, kind: HeaderType, name: &str) -> Option<usize> {
        std::str::from_utf8(self.header_ref(kind, name)?).ok()?.trim().parse().ok()
    }

    /// Set (or with `None` remove) a header.
    pub fn set_header(&self, kind: HeaderType, name: &str, value: Option<&str>) -> bool {
        let value = value.map(|v| ModuleBuffer::of(v.as_bytes())).unwrap_or(ModuleBuffer::NULL);
        // SAFETY: valid filter pointer; buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(self.0, kind, ModuleBuffer::of(name.as_bytes()), value)
        }
    }

    /// Add a header value (the wasm filter appends debug headers the same way).
    pub fn add_header(&self, kind: HeaderType, name: &str, value: &str) -> bool {
        // SAFETY: valid filter pointer; buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    pub fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut raw: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key_ptr: k.as_ptr(),
                key_length: k.len(),
                value_ptr: v.as_ptr(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: valid filter pointer; headers and body live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(b"smart_router"),
            )
        }
    }

    fn chunks(&self, kind: BodyType, out: &mut Vec<u8>) {
        // SAFETY: valid filter pointer; the chunk array is sized as Envoy says and the
        // chunks are copied before the hook returns.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind);
            if n == 0 {
                return;
            }
            let mut bufs = vec![EnvoyBuffer::NULL; n];
            if !abi::envoy_dynamic_module_callback_http_get_body_chunks(self.0, kind, bufs.as_mut_ptr()) {
                return;
            }
            for b in &bufs {
                if let Some(s) = b.as_slice() {
                    out.extend_from_slice(s);
                }
            }
        }
    }

    pub fn body_size(&self, kind: BodyType) -> usize {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.0, kind) }
    }

    /// The whole request (or response) body so far: what earlier callbacks buffered
    /// plus the chunk just received (unless the received chunk is the buffer itself).
    pub fn whole_body(&self, request: bool) -> Vec<u8> {
        let (buffered, received) = if request {
            (BodyType::BufferedRequestBody, BodyType::ReceivedRequestBody)
        } else {
            (BodyType::BufferedResponseBody, BodyType::ReceivedResponseBody)
        };
        // SAFETY: valid filter pointer.
        let same = unsafe {
            if request {
                abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.0)
            } else {
                abi::envoy_dynamic_module_callback_http_received_buffered_response_body(self.0)
            }
        };
        let mut out = Vec::with_capacity(self.body_size(buffered) + if same { 0 } else { self.body_size(received) });
        self.chunks(buffered, &mut out);
        if !same {
            self.chunks(received, &mut out);
        }
        out
    }

    /// Replace the whole request body with `body` (Envoy has drain and append only).
    pub fn replace_request_body(&self, body: &[u8]) -> bool {
        // SAFETY: valid filter pointer; `body` lives for the call.
        unsafe {
            let same = abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.0);
            let buffered = abi::envoy_dynamic_module_callback_http_get_body_size(self.0, BodyType::BufferedRequestBody);
            let received = abi::envoy_dynamic_module_callback_http_get_body_size(self.0, BodyType::ReceivedRequestBody);
            // Write where the data is: the received chunk when nothing was buffered
            // before it (one chunk, the usual case), else the buffer.
            let target = if buffered == 0 { BodyType::ReceivedRequestBody } else { BodyType::BufferedRequestBody };
            let mut ok = true;
            if buffered > 0 {
                ok &=
                    abi::envoy_dynamic_module_callback_http_drain_body(self.0, BodyType::BufferedRequestBody, buffered);
            }
            if !same && received > 0 {
                ok &=
                    abi::envoy_dynamic_module_callback_http_drain_body(self.0, BodyType::ReceivedRequestBody, received);
            }
            ok && abi::envoy_dynamic_module_callback_http_append_body(self.0, target, ModuleBuffer::of(body))
        }
    }

    /// Set one string in a dynamic-metadata namespace of this stream (its attempts'
    /// upstream filters read the same metadata).
    pub fn set_metadata_string(&self, namespace: &str, key: &str, value: &str) {
        // SAFETY: valid filter pointer; buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.0,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// A string from this stream's dynamic metadata, copied.
    pub fn metadata_string(&self, namespace: &str, key: &str) -> Option<String> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: valid filter pointer; the result is copied before returning.
        unsafe {
            if !abi::envoy_dynamic_module_callback_http_get_metadata_string(
                self.0,
                MetadataSource::Dynamic,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                &mut out,
            ) {
                return None;
            }
            std::str::from_utf8(out.as_slice()?).ok().map(str::to_owned)
        }
    }

    /// An integer attribute of the stream (`abi::*_ATTRIBUTE`).
    pub fn attribute_int(&self, id: u32) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: valid filter pointer; `out` is written by Envoy.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut out) }.then_some(out)
    }

    /// Make Envoy pick the cluster again (the route itself stays): the
    /// `priority_group` specifier then reads the plan from metadata.
    pub fn refresh_cluster(&self) {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cluster_cache(self.0) }
    }
}
