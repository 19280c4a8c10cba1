//! The channels' clusters as the control plane serves them to Envoy (cluster
//! discovery over REST), so a channel added, removed or moved goes live with no
//! new bootstrap and no restart.
//!
//! A table must never name a cluster Envoy does not have yet: Envoy fails such a
//! request outright instead of moving to the next attempt. So a new cluster is
//! served at once but enters tables only once every Envoy has polled since
//! ([`SETTLE`]); and a cluster whose channel went away is served on for
//! [`RETIRE_AFTER`], while requests planned with the older table finish and
//! Envoys that have not fetched the newer table yet still find it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use crate::envoy::{CDS_REFRESH_MS, CLUSTER_TYPE_URL};

/// Every Envoy polls within twice the refresh delay (Envoy's jitter adds up to
/// one delay); the rest covers applying the answer.
pub const SETTLE: Duration = Duration::from_millis(2 * CDS_REFRESH_MS + 250);
/// How long a removed channel's cluster is still served.
pub const RETIRE_AFTER: Duration = Duration::from_secs(600);

/// One discovery answer: its version and its JSON body.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub version: String,
    pub body: Bytes,
}

#[derive(Debug, Default)]
pub struct ClusterSet {
    /// Current clusters by name, with when each first appeared.
    live: HashMap<String, (serde_json::Value, Instant)>,
    /// Clusters of channels that went away, with when.
    retired: HashMap<String, (serde_json::Value, Instant)>,
    served: Arc<Served>,
}

impl ClusterSet {
    /// Take the clusters a config asks for; true when what Envoy is served changed.
    /// `settled` marks them usable at once (the first config: Envoy fetches
    /// clusters before it takes any request).
    pub fn update(&mut self, fresh: Vec<(String, serde_json::Value)>, now: Instant, settled: bool) -> bool {
        let since = if settled { now.checked_sub(SETTLE).unwrap_or(now) } else { now };
        let mut live = HashMap::with_capacity(fresh.len());
        for (name, value) in fresh {
            self.retired.remove(&name);
            // A moved cluster stays usable: until Envoy fetches it, it still has
            // the old one under the same name.
            let at = self.live.remove(&name).map_or(since, |(_, at)| at);
            live.insert(name, (value, at));
        }
        for (name, (value, _)) in self.live.drain() {
            self.retired.insert(name, (value, now));
        }
        self.live = live;
        self.expire(now);
        self.reserve()
    }

    /// Drop clusters retired long enough ago; true when what is served changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.retired.len();
        self.retired.retain(|_, (_, at)| now.duration_since(*at) < RETIRE_AFTER);
        before != self.retired.len() && self.reserve()
    }

    /// Whether a table may name this cluster.
    pub fn ready(&self, name: &str, now: Instant) -> bool {
        self.live.get(name).is_some_and(|(_, at)| now.duration_since(*at) >= SETTLE)
    }

    /// Whether some cluster is served but not yet ready.
    pub fn settling(&self, now: Instant) -> bool {
        self.live.values().any(|(_, at)| now.duration_since(*at) < SETTLE)
    }

    pub fn served(&self) -> Arc<Served> {
        self.served.clone()
    }

    /// Build the answer again; true when it changed.
    fn reserve(&mut self) -> bool {
        let mut all: Vec<(&String, &serde_json::Value)> =
            self.live.iter().map(|(n, (v, _))| (n, v)).chain(self.retired.iter().map(|(n, (v, _))| (n, v))).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        let resources: Vec<&serde_json::Value> = all.into_iter().map(|(_, v)| v).collect();
        let content = serde_json::to_vec(&resources).unwrap_or_default();
        let version = crate::secrets::digest(&content).get(..16).unwrap_or_default().to_string();
        if version == self.served.version {
            return false;
        }
        let body = serde_json::json!({
            "version_info": version,
            "type_url": CLUSTER_TYPE_URL,
            "resources": resources,
        });
        self.served = Arc::new(Served { version, body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()) });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(name: &str, host: &str) -> (String, serde_json::Value) {
        (name.to_string(), json!({"name": name, "host": host}))
    }

    #[test]
    fn a_new_cluster_is_served_at_once_and_named_in_tables_after_settling() {
        let t0 = Instant::now();
        let mut set = ClusterSet::default();
        assert!(set.update(vec![cluster("channel_a", "a")], t0, true));
        assert!(set.ready("channel_a", t0));
        assert!(set.update(vec![cluster("channel_a", "a"), cluster("channel_b", "b")], t0, false));
        let body: serde_json::Value = serde_json::from_slice(&set.served().body).unwrap();
        assert_eq!(body["resources"].as_array().unwrap().len(), 2);
        assert!(set.ready("channel_a", t0), "an unchanged cluster stays ready");
        assert!(!set.ready("channel_b", t0));
        assert!(set.settling(t0));
        assert!(set.ready("channel_b", t0 + SETTLE));
        assert!(!set.settling(t0 + SETTLE));
    }

    #[test]
    fn a_removed_cluster_is_served_until_it_retires() {
        let t0 = Instant::now();
        let mut set = ClusterSet::default();
        set.update(vec![cluster("channel_a", "a"), cluster("channel_b", "b")], t0, true);
        let v1 = set.served().version.clone();
        assert!(!set.update(vec![cluster("channel_a", "a")], t0, false), "still served: same answer");
        assert!(!set.ready("channel_b", t0), "never named in a table again");
        assert_eq!(set.served().version, v1);
        assert!(set.expire(t0 + RETIRE_AFTER));
        let body: serde_json::Value = serde_json::from_slice(&set.served().body).unwrap();
        assert_eq!(body["resources"], json!([{"name": "channel_a", "host": "a"}]));
        assert_eq!(body["version_info"], set.served().version.as_str());
    }

    #[test]
    fn a_moved_cluster_is_served_anew_and_stays_usable() {
        let t0 = Instant::now();
        let mut set = ClusterSet::default();
        set.update(vec![cluster("channel_a", "a")], t0, true);
        assert!(set.update(vec![cluster("channel_a", "a2")], t0, false));
        assert!(set.ready("channel_a", t0));
    }
}
