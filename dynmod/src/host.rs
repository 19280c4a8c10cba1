//! The roles' [`Host`] for the dynamic module: safe wrappers over the Envoy
//! callbacks a filter makes.
//!
//! [`ModuleHost`] is made per hook from the filter's Envoy pointer, which Envoy
//! guarantees valid until the filter is destroyed. Anything read from Envoy in
//! place (a header value, a body chunk, metadata) is borrowed from the host
//! (`&self`), and everything that changes the stream takes `&mut self`: a view
//! into Envoy's memory cannot outlive a change that may move it, and cannot leave
//! the hook.

use std::borrow::Cow;
use std::cell::OnceCell;

use router_core::roles::config::{LOCAL_REPLY_DETAILS, METADATA_NAMESPACE, PLAN_METADATA_KEY};
use router_core::roles::Host;

use crate::abi::{
    self, BodyType, EnvoyBuffer, EnvoyFilter, EnvoyHttpHeader, HeaderType, MetadataSource, ModuleBuffer,
    ModuleHttpHeader, ATTEMPT_COUNT_ATTRIBUTE,
};
use crate::state::{self, Process};

const REQ: HeaderType = HeaderType::RequestHeader;
const RESP: HeaderType = HeaderType::ResponseHeader;

pub struct ModuleHost {
    envoy: EnvoyFilter,
    /// The request headers, read whole on first use: one read costs less than a
    /// lookup per name once a hook needs more than one (Envoy builds a
    /// lower-cased key for each lookup).
    request_headers: OnceCell<HeaderList>,
}

impl ModuleHost {
    /// # Safety
    /// `envoy` is the filter's Envoy pointer, passed to the current hook.
    pub unsafe fn new(envoy: EnvoyFilter) -> Self {
        Self { envoy, request_headers: OnceCell::new() }
    }

    /// Every header of one map, fetched in two calls.
    fn headers(&self, kind: HeaderType) -> HeaderList {
        // SAFETY: valid filter pointer; the array is sized as Envoy says.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_headers_size(self.envoy, kind);
            let mut list = HeaderList { on_stack: [EnvoyHttpHeader::NULL; 16], on_heap: Vec::new(), len: n };
            let entries = if n <= list.on_stack.len() {
                &mut list.on_stack[..n]
            } else {
                list.on_heap.resize(n, EnvoyHttpHeader::NULL);
                &mut list.on_heap[..]
            };
            if n > 0 && !abi::envoy_dynamic_module_callback_http_get_headers(self.envoy, kind, entries.as_mut_ptr()) {
                list.len = 0;
            }
            list
        }
    }

    /// One header's first value (UTF-8), looked up by name, in place.
    fn header(&self, kind: HeaderType, name: &str) -> Option<&str> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: valid filter pointer; `out` points into Envoy's map, which stays
        // as it is while `&self` is borrowed (changes take `&mut self`).
        unsafe {
            if !abi::envoy_dynamic_module_callback_http_get_header(
                self.envoy,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            ) {
                return None;
            }
            std::str::from_utf8(out.as_slice()?).ok()
        }
    }

    fn set_header(&mut self, kind: HeaderType, name: &str, value: Option<&str>) -> bool {
        if kind == REQ {
            // The cached list may point into what this changes.
            self.request_headers.take();
        }
        let value = value.map(|v| ModuleBuffer::of(v.as_bytes())).unwrap_or(ModuleBuffer::NULL);
        // SAFETY: valid filter pointer; buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        }
    }

    /// Call `each` with every chunk of one body buffer, in order. The chunk list
    /// lives on the stack unless the body is in many pieces.
    fn for_each_chunk<'s>(&'s self, kind: BodyType, mut each: impl FnMut(&'s [u8])) {
        // SAFETY: valid filter pointer; the chunk array is sized as Envoy says, and
        // the chunks stay as they are while `&self` is borrowed.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.envoy, kind);
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
            if !abi::envoy_dynamic_module_callback_http_get_body_chunks(self.envoy, kind, bufs.as_mut_ptr()) {
                return;
            }
            for b in bufs.iter() {
                if let Some(s) = b.as_slice() {
                    each(s);
                }
            }
        }
    }

    fn body_size(&self, kind: BodyType) -> usize {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.envoy, kind) }
    }

    /// Whether the chunk just received is the buffer itself.
    fn received_is_buffered(&self, request: bool) -> bool {
        // SAFETY: valid filter pointer.
        unsafe {
            if request {
                abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.envoy)
            } else {
                abi::envoy_dynamic_module_callback_http_received_buffered_response_body(self.envoy)
            }
        }
    }

    /// The whole request (or response) body so far: what earlier callbacks
    /// buffered plus the chunk just received. A body in one piece (the usual
    /// case for a small request) is read where Envoy holds it; only a body in
    /// several pieces is copied, to join them.
    fn whole_body<'s>(&'s self, request: bool) -> Cow<'s, [u8]> {
        let (buffered, received) = if request {
            (BodyType::BufferedRequestBody, BodyType::ReceivedRequestBody)
        } else {
            (BodyType::BufferedResponseBody, BodyType::ReceivedResponseBody)
        };
        let same = self.received_is_buffered(request);
        let mut first: Option<&'s [u8]> = None;
        let mut joined: Option<Vec<u8>> = None;
        let mut add = |chunk: &'s [u8]| {
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
            Some(all) => Cow::Owned(all),
            None => Cow::Borrowed(first.unwrap_or_default()),
        }
    }

    /// Replace the whole request or response body with `body` (Envoy has drain
    /// and append only).
    fn replace_body(&mut self, request: bool, body: &[u8]) -> bool {
        let (buffered_kind, received_kind) = if request {
            (BodyType::BufferedRequestBody, BodyType::ReceivedRequestBody)
        } else {
            (BodyType::BufferedResponseBody, BodyType::ReceivedResponseBody)
        };
        let same = self.received_is_buffered(request);
        let buffered = self.body_size(buffered_kind);
        let received = self.body_size(received_kind);
        // Write where the data is: the received chunk when nothing was buffered
        // before it (one chunk, the usual case), else the buffer.
        let target = if buffered == 0 { received_kind } else { buffered_kind };
        // SAFETY: valid filter pointer; `body` lives for the call.
        unsafe {
            let mut ok = true;
            if buffered > 0 {
                ok &= abi::envoy_dynamic_module_callback_http_drain_body(self.envoy, buffered_kind, buffered);
            }
            if !same && received > 0 {
                ok &= abi::envoy_dynamic_module_callback_http_drain_body(self.envoy, received_kind, received);
            }
            ok && abi::envoy_dynamic_module_callback_http_append_body(self.envoy, target, ModuleBuffer::of(body))
        }
    }

    fn attribute_int(&self, id: u32) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: valid filter pointer; `out` is written by Envoy.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(self.envoy, id, &mut out) }
            .then_some(out)
    }
}

impl Host for ModuleHost {
    type Shared = Process;

    fn shared(&self) -> &Process {
        state::process()
    }

    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.request_headers.get_or_init(|| self.headers(REQ)).get(name).map(Cow::Borrowed)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.set_header(REQ, name, value);
    }

    fn with_request_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&self.whole_body(true))
    }

    fn edit_request_body(&mut self, edits: &[((usize, usize), String)]) -> bool {
        let Some(body) = router_core::flow::edited(&self.whole_body(true), edits) else {
            return false;
        };
        self.replace_body(true, &body)
    }

    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.header(RESP, name).map(Cow::Borrowed)
    }

    fn set_response_header(&mut self, name: &str, value: &str) -> bool {
        self.set_header(RESP, name, Some(value))
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        // SAFETY: valid filter pointer; buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.envoy,
                RESP,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn with_response_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&self.whole_body(false))
    }

    fn replace_response_body(&mut self, body: &[u8]) -> bool {
        self.replace_body(false, body)
    }

    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
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
                self.envoy,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(LOCAL_REPLY_DETAILS.as_bytes()),
            )
        }
    }

    fn deliver_plan<'a>(&mut self, plan: &str, _clusters: impl Iterator<Item = &'a str>, _retries: usize) -> bool {
        // The plan as one metadata string (the attempt role and retries read it);
        // the module's own cluster specifier takes each attempt's cluster from it
        // and caps the retries at the plan.
        // SAFETY: valid filter pointer; buffers live for the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.envoy,
                ModuleBuffer::of(METADATA_NAMESPACE.as_bytes()),
                ModuleBuffer::of(PLAN_METADATA_KEY.as_bytes()),
                ModuleBuffer::of(plan.as_bytes()),
            );
        }
        // The route's cluster was chosen before the plan existed: the specifier
        // answers again, now from the plan, handed over in memory.
        let envoy = self.envoy;
        crate::specifier::with_plan_handed_over(plan, || {
            // SAFETY: valid filter pointer.
            unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cluster_cache(envoy) }
        });
        true
    }

    fn plan_text(&self) -> Option<Cow<'_, str>> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: valid filter pointer; the metadata stays while `&self` is borrowed.
        unsafe {
            if !abi::envoy_dynamic_module_callback_http_get_metadata_string(
                self.envoy,
                MetadataSource::Dynamic,
                ModuleBuffer::of(METADATA_NAMESPACE.as_bytes()),
                ModuleBuffer::of(PLAN_METADATA_KEY.as_bytes()),
                &mut out,
            ) {
                return None;
            }
            std::str::from_utf8(out.as_slice()?).ok().map(Cow::Borrowed)
        }
    }

    fn attempt_number(&self) -> Option<usize> {
        self.attribute_int(ATTEMPT_COUNT_ATTRIBUTE).and_then(|n| usize::try_from(n).ok())
    }

    fn attempts_made(&self) -> Option<usize> {
        // 0 when Envoy answered before any attempt.
        self.attempt_number().filter(|&n| n > 0)
    }
}

/// Headers read with [`ModuleHost::headers`]; they point into Envoy's map.
/// (A request's few headers fit on the stack.)
struct HeaderList {
    on_stack: [EnvoyHttpHeader; 16],
    on_heap: Vec<EnvoyHttpHeader>,
    len: usize,
}

impl HeaderList {
    fn entries(&self) -> &[EnvoyHttpHeader] {
        let all = if self.on_heap.is_empty() { &self.on_stack[..] } else { &self.on_heap[..] };
        all.get(..self.len).unwrap_or_default()
    }

    /// The first value of `name` (lower case, as Envoy stores names); `None` when
    /// absent or not UTF-8.
    fn get(&self, name: &str) -> Option<&str> {
        self.entries().iter().find_map(|h| {
            // SAFETY: Envoy's buffers stay valid while the list is borrowed (it is
            // dropped before any header changes); a null pointer is never read.
            let key = unsafe { EnvoyBuffer { ptr: h.key_ptr, length: h.key_length }.as_slice() }?;
            if key != name.as_bytes() {
                return None;
            }
            // SAFETY: as above.
            let value = unsafe { EnvoyBuffer { ptr: h.value_ptr, length: h.value_length }.as_slice() };
            std::str::from_utf8(value.unwrap_or_default()).ok()
        })
    }
}
