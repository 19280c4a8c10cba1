//! The router's Envoy filters, written once for both hosts.
//!
//! The proxy-wasm filter and the native dynamic module only forward Envoy's
//! hooks to these roles and implement [`Host`] and [`Shared`] for their host:
//! - [`RouterRole`]: the downstream filter, one per client request;
//! - [`AttemptRole`]: the upstream filter, one per attempt;
//! - [`intake`]: taking in the channel table from the control plane;
//! - [`stats`]: the counters both show in Envoy's stats;
//! - [`config`]: the filter configuration `render-envoy` writes and both read.
//!
//! Every per-request behaviour lives here; a shim that grows logic of its own
//! grows a second copy of it.

mod attempt;
pub mod config;
pub mod delivery;
pub mod host;
pub mod intake;
pub mod live;
mod router;
pub mod stats;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;

/// The header that names the Envoy sending a health report, so the control
/// plane keeps each Envoy's counts apart.
pub const NODE_HEADER: &str = "x-router-node";

/// A health report goes when the health state changed, and at least this
/// often where client tokens have limits: the answer is how an Envoy hears
/// what the others counted.
pub const REPORT_EVERY_MS: u64 = 1_000;

/// An Envoy's name in health reports: its random id in hex.
pub fn node_id(random: u64) -> String {
    format!("{random:016x}")
}

pub use attempt::AttemptRole;
pub use host::{Host, Shared, Step};
pub use router::RouterRole;
