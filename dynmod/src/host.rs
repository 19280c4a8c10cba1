//! Safe wrappers over the Envoy callbacks a filter makes. Each takes the filter's
//! Envoy pointer, which Envoy guarantees valid until the filter is destroyed; the
//! buffers Envoy returns are copied or used before the hook returns.

use crate::abi::{
    self, BodyType, EnvoyBuffer, EnvoyFilter, EnvoyHttpHeader, HeaderType, MetadataSource, ModuleBuffer,
    ModuleHttpHeader,
};

#[derive(Clone, Copy)]
pub struct Host(pub EnvoyFilter);

impl Host {
    /// Every header of one map, fetched in two calls. Cheaper than a lookup per
    /// name once a hook reads more than one: Envoy builds a lower-cased key for
    /// every lookup. The entries point into Envoy's map, so the list must be
    /// dropped before this hook sets or removes any header.
    pub fn headers(&self, kind: HeaderType) -> HeaderList {
        // SAFETY: valid filter pointer; the array is sized as Envoy says.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_headers_size(self.0, kind);
            let mut list = HeaderList { on_stack: [EnvoyHttpHeader::NULL; 16], on_heap: Vec::new(), len: n };
            let entries = if n <= list.on_stack.len() {
                &mut list.on_stack[..n]
            } else {
                list.on_heap.resize(n, EnvoyHttpHeader::NULL);
                &mut list.on_heap[..]
            };
            if n > 0 && !abi::envoy_dynamic_module_callback_http_get_headers(self.0, kind, entries.as_mut_ptr()) {
                list.len = 0;
            }
            list
        }
    }

    /// `read` applied to one header's first value (UTF-8; `None` when absent or
    /// not UTF-8), looked up by name: cheaper than [`Host::headers`] for a single
    /// name, and nothing is copied.
    pub fn header_with<T>(&self, kind: HeaderType, name: &str, read: impl FnOnce(&str) -> T) -> Option<T> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: valid filter pointer (see module docs); `out` is written by Envoy
        // and used before returning.
        unsafe {
            if !abi::envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            ) {
                return None;
            }
            std::str::from_utf8(out.as_slice()?).ok().map(read)
        }
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

    /// Call `each` with every chunk of one body buffer, in order. The chunk list
    /// lives on the stack unless the body is in many pieces.
    fn for_each_chunk<'h>(&self, kind: BodyType, mut each: impl FnMut(&'h [u8])) {
        // SAFETY: valid filter pointer; the chunk array is sized as Envoy says, and
        // the chunks stay valid until the hook returns.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind);
            if n == 0 {
                return;
            }
            let mut on_stack = [EnvoyBuffer::NULL; 8];
            let mut on_heap = Vec::new();
            let bufs = if n <= on_stack.len() {
                &mut on_stack[..n]
            } else {
                on_heap.resize(n, EnvoyBuffer::NULL);
                &mut on_heap[..]
            };
            if !abi::envoy_dynamic_module_callback_http_get_body_chunks(self.0, kind, bufs.as_mut_ptr()) {
                return;
            }
            for b in bufs.iter() {
                if let Some(s) = b.as_slice() {
                    each(s);
                }
            }
        }
    }

    pub fn body_size(&self, kind: BodyType) -> usize {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.0, kind) }
    }

    /// `read` applied to the whole request (or response) body so far: what
    /// earlier callbacks buffered plus the chunk just received (unless the
    /// received chunk is the buffer itself). A body in one piece (the usual case
    /// for a small request) is read where Envoy holds it; only a body in several
    /// pieces is copied, to join them.
    pub fn with_whole_body<R>(&self, request: bool, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&self.whole_body(request))
    }

    /// See [`Host::with_whole_body`]; `'h` is the hook's duration.
    fn whole_body<'h>(&self, request: bool) -> std::borrow::Cow<'h, [u8]> {
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
        let mut first: Option<&'h [u8]> = None;
        let mut joined: Option<Vec<u8>> = None;
        let mut add = |chunk: &'h [u8]| {
            if chunk.is_empty() {
                return;
            }
            if let Some(all) = &mut joined {
                all.extend_from_slice(chunk);
            } else if let Some(head) = first {
                let size = self.body_size(buffered) + if same { 0 } else { self.body_size(received) };
                let mut all = Vec::with_capacity(size.max(head.len() + chunk.len()));
                all.extend_from_slice(head);
                all.extend_from_slice(chunk);
                joined = Some(all);
            } else {
                first = Some(chunk);
            }
        };
        self.for_each_chunk(buffered, &mut add);
        if !same {
            self.for_each_chunk(received, &mut add);
        }
        match joined {
            Some(all) => std::borrow::Cow::Owned(all),
            None => std::borrow::Cow::Borrowed(first.unwrap_or_default()),
        }
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

    /// A string from this stream's dynamic metadata, borrowed from Envoy: valid
    /// until the hook returns or the module sets metadata.
    pub fn metadata_str<'h>(&self, namespace: &str, key: &str) -> Option<&'h str> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: valid filter pointer; callers use the result within the hook.
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
            std::str::from_utf8(out.as_slice()?).ok()
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

/// Headers read with [`Host::headers`]; valid until the hook returns or sets a
/// header.
/// (A request's few headers fit on the stack.)
pub struct HeaderList {
    on_stack: [EnvoyHttpHeader; 16],
    on_heap: Vec<EnvoyHttpHeader>,
    len: usize,
}

impl HeaderList {
    fn entries(&self) -> &[EnvoyHttpHeader] {
        let all = if self.on_heap.is_empty() { &self.on_stack[..] } else { &self.on_heap[..] };
        all.get(..self.len).unwrap_or_default()
    }

    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.entries().iter().find_map(|h| {
            // SAFETY: Envoy's buffers stay valid while the list may be used (see
            // `Host::headers`); a null pointer is never read.
            let key = unsafe { EnvoyBuffer { ptr: h.key_ptr, length: h.key_length }.as_slice() }?;
            if key != name.as_bytes() {
                return None;
            }
            // SAFETY: as above.
            Some(unsafe { EnvoyBuffer { ptr: h.value_ptr, length: h.value_length }.as_slice() }.unwrap_or_default())
        })
    }

    /// The first value of `name` (lower case, as Envoy stores names); `None` when
    /// absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.raw(name)?).ok()
    }

    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }
}
