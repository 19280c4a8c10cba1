//! What the roles need from Envoy, as two small traits each shim implements:
//! [`Host`] for one request's stream (headers, body, replies, the plan's
//! hand-over), [`Shared`] for what every worker thread shares (the table,
//! channel health, measured speed, stats, the clock).
//!
//! The roles are generic over them and statically dispatched: a shim's
//! implementation is inlined into the role code as if it were written there.
//! Borrowed views (a header value, the body, the plan text) are tied to `&self`,
//! and everything that changes the stream takes `&mut self`: a view into Envoy's
//! memory cannot outlive a change that may move it.

use std::borrow::Cow;
use std::ops::Deref;

use crate::health::HealthMap;
use crate::record::Record;
use crate::score::PerfMap;
use crate::Table;

use super::stats::Stats;

/// State every worker thread of one Envoy shares. The wasm filter keeps a copy
/// per VM and writes through Envoy's shared data; the dynamic module holds it in
/// process memory.
pub trait Shared {
    /// How the shim holds a compiled table (`Rc` in a wasm VM, `Arc` natively).
    type Table: Deref<Target = Table> + Clone;

    /// The current table, if one arrived.
    fn table(&self) -> Option<Self::Table>;
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> u64;
    fn health<R>(&self, read: impl FnOnce(&HealthMap) -> R) -> R;
    /// Apply `change` to the shared map; `change` returns whether it changed
    /// anything. True when a change was made and stored.
    fn update_health(&self, change: impl FnMut(&mut HealthMap) -> bool) -> bool;
    /// See other workers' health writes now rather than at the next refresh,
    /// for decisions that must (request limits). Nothing to do where all
    /// workers share one copy.
    fn sync_health(&self) {}
    fn perf<R>(&self, read: impl FnOnce(&PerfMap) -> R) -> R;
    /// One attempt's speed sample, folded into the shared averages later.
    fn add_perf(&self, channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>);
    /// Counts for Envoy's stats, handed to Envoy later.
    fn stats(&self, record: impl FnOnce(&mut Stats));
    /// A usage record id no other request of this Envoy has had or will have.
    fn next_record_id(&self) -> String;
    /// Hand a finished request's record to the control plane (through a bounded
    /// buffer; a record that does not fit is counted as dropped, never silently).
    fn emit_record(&self, record: Record);
}

/// One request's stream, as a filter sees it. Methods are only called where
/// Envoy supports them: request headers and body in the request phase, response
/// headers and body in the response phase.
pub trait Host {
    type Shared: Shared;

    fn shared(&self) -> &Self::Shared;

    fn request_header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// Set (`Some`) or remove (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// `read` applied to the whole buffered request body.
    fn with_request_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R;
    /// Make `edits` (byte ranges and what to put there, in body order) in the
    /// buffered request body.
    fn edit_request_body(&mut self, edits: &[((usize, usize), String)]) -> bool;

    fn response_header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// Set a response header; false when Envoy refused (it may, once the
    /// headers have moved on).
    fn set_response_header(&mut self, name: &str, value: &str) -> bool;
    /// Add a response header (the router role's debug headers).
    fn add_response_header(&mut self, name: &str, value: &str);
    /// `read` applied to the whole buffered response body.
    fn with_response_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R;
    /// Replace the whole buffered response body.
    fn replace_response_body(&mut self, body: &[u8]) -> bool;

    /// Answer the client now with `status`, extra headers and a JSON body.
    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str);

    /// Hand a routed request's plan to Envoy, so that its cluster choice and its
    /// attempts follow it: `plan` is the plan text, `clusters` each attempt's
    /// cluster in order, `retries` the retries Envoy should make.
    fn deliver_plan<'a>(&mut self, plan: &str, clusters: impl Iterator<Item = &'a str>, retries: usize) -> bool;
    /// The plan text, on the attempt side.
    fn plan_text(&self) -> Option<Cow<'_, str>>;
    /// Which attempt this is (1 for the first), on the attempt side.
    fn attempt_number(&self) -> Option<usize>;
    /// How many attempts Envoy made, in the router role's response phase.
    fn attempts_made(&self) -> Option<usize>;
}

/// What a hook tells Envoy to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Headers: stop iteration (to wait for the body, or after a local reply);
    /// body: keep buffering.
    Stop,
}
