//! The roles' configuration: what `render-envoy` writes into Envoy's config for
//! each filter and both shims read back (the wasm filter from its plugin
//! configuration, the dynamic module from its filter config). One type, so the
//! writer and the readers cannot drift apart.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Dynamic-metadata namespace of the plan. The dynamic module writes the plan
/// there under [`PLAN_METADATA_KEY`]; on the wasm path `header_to_metadata` puts
/// the `priority_group` specifier's list there under [`PRIORITY_GROUPS_KEY`].
pub const METADATA_NAMESPACE: &str = "smart_router";
pub const PLAN_METADATA_KEY: &str = "attempts";
pub const PRIORITY_GROUPS_KEY: &str = "priority_groups";
/// Request header the wasm router role sets for `header_to_metadata` (which
/// removes it before anything is sent upstream).
pub const PLAN_HEADER: &str = "x-sar-plan";
/// Filter state (`wasm.sar_attempts`) holding the plan for the wasm attempt role.
pub const PLAN_FILTER_STATE: &str = "sar_attempts";
/// Envoy's response-code details for the router's own answers.
pub const LOCAL_REPLY_DETAILS: &str = "smart_router";
/// Largest request body the router buffers unless the config says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How often Envoy asks the control plane for a new table, unless configured.
pub const DEFAULT_POLL_MS: u64 = 500;

/// One filter's configuration; `role` says which part of the router it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum FilterConfig {
    /// The wasm filter's singleton service: fetches the table for every worker.
    Service(ServiceConfig),
    /// The downstream filter: answers listings and errors, plans each request.
    Router(RouterConfig),
    /// The upstream filter, once per attempt.
    Attempt(AttemptConfig),
    /// Wasm only: makes Envoy match the route again once the plan is in metadata.
    ClearRoute(ClearRouteConfig),
}

impl FilterConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where the wasm service finds the control plane: an Envoy cluster.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub control_plane_cluster: String,
    /// `:authority` of the table requests.
    pub control_plane_authority: String,
    /// The table token (the table holds provider keys).
    pub token: String,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Clusters this Envoy has; channels outside it are left out of plans.
    #[serde(default)]
    pub clusters: Vec<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The route's `num_retries`: on the wasm path a plan that uses exactly that
    /// many retries needs no `x-envoy-max-retries` header.
    #[serde(default)]
    pub num_retries: Option<usize>,
    /// The dynamic module fetches the table itself, straight from the control
    /// plane (the wasm filter's service role does it for the wasm path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneLink>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self { clusters: Vec::new(), max_body_bytes: DEFAULT_MAX_BODY_BYTES, num_retries: None, control_plane: None }
    }
}

/// A direct connection to the control plane (dynamic module).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneLink {
    /// `host:port`.
    pub address: String,
    pub token: String,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptConfig {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRouteConfig {}

fn default_poll_ms() -> u64 {
    DEFAULT_POLL_MS
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("control_plane_cluster", &self.control_plane_cluster)
            .field("control_plane_authority", &self.control_plane_authority)
            .field("token", &"<redacted>")
            .field("poll_ms", &self.poll_ms)
            .finish()
    }
}

impl fmt::Debug for ControlPlaneLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneLink")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("poll_ms", &self.poll_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_and_unknown_keys_are_refused() {
        let all = [
            FilterConfig::Service(ServiceConfig {
                control_plane_cluster: "cp".into(),
                control_plane_authority: "127.0.0.1:7602".into(),
                token: "t".into(),
                poll_ms: 100,
            }),
            FilterConfig::Router(RouterConfig {
                clusters: vec!["channel_a".into()],
                max_body_bytes: 1024,
                num_retries: Some(2),
                control_plane: Some(ControlPlaneLink {
                    address: "127.0.0.1:7602".into(),
                    token: "t".into(),
                    poll_ms: 50,
                }),
            }),
            FilterConfig::Attempt(AttemptConfig {}),
            FilterConfig::ClearRoute(ClearRouteConfig {}),
        ];
        for c in all {
            assert_eq!(FilterConfig::from_json(c.to_json().as_bytes()).unwrap(), c);
        }
        let router = FilterConfig::from_json(br#"{"role":"router"}"#).unwrap();
        assert_eq!(router, FilterConfig::Router(RouterConfig::default()));
        assert!(FilterConfig::from_json(br#"{"role":"router","max_body":1}"#).is_err());
        assert!(FilterConfig::from_json(br#"{"role":"nope"}"#).is_err());
        assert!(!format!(
            "{:?}",
            FilterConfig::from_json(
                br#"{"role":"service","control_plane_cluster":"c","control_plane_authority":"a","token":"secret-t"}"#
            )
            .unwrap()
        )
        .contains("secret-t"));
    }
}
