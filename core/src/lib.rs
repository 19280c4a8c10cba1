//! Pure routing logic for Smart AI Router.
//!
//! Shared by the proxy-wasm filter (compiled for `wasm32-wasip1`) and the control
//! plane (native). Nothing here touches the network, a clock or randomness: callers
//! pass in what they need, so every decision is reproducible in a unit test.
//!
//! - [`table`]: the versioned contract the control plane serves to filters
//!   ([`table::TableDoc`]) and its compiled, indexed form ([`table::Table`]).
//! - [`request`]: reads the few fields of a chat request the router needs.
//! - [`resolve`], [`groups`]: how a query resolves against the table (physical names,
//!   aliases, core names, tags, virtual groups), for routing and for `explain`.
//! - [`health`]: error classes and the circuit breaker, shared by all Envoy workers.
//! - [`score`]: strategies and scores that order candidates.
//! - [`plan`]: the resolved candidates cut to an ordered plan of attempts.
//! - [`wire`]: how a plan is handed to Envoy and to the per-attempt filter.
//! - [`flow`]: what the router decides for one request.
//! - [`roles`]: the router's Envoy filters, for both Envoy hosts.
//! - [`usage`], [`cost`], [`sse`]: token usage as providers report it, what it
//!   cost, and a stream's usage read as it passes.
//! - [`error`]: OpenAI-shaped errors.

pub mod cost;
pub mod error;
pub mod flow;
pub mod groups;
pub mod health;
pub mod known;
pub mod names;
pub mod plan;
pub mod query;
pub mod record;
pub mod request;
pub mod resolve;
pub mod roles;
pub mod score;
pub mod sse;
pub mod table;
#[cfg(test)]
pub(crate) mod testrng;
pub mod usage;
pub mod wire;

pub use error::RouterError;
pub use plan::{Attempt, Plan};
pub use table::{Table, TableDoc};
