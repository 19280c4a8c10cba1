//! Each channel's last good discovery on disk, `<data_dir>/cache/channels/<id>.json`,
//! so a restart serves the same models without calling every `/models` first.
//! A result is tied to the URL and key it was fetched with (free and paid keys of
//! one provider see different catalogues): the fingerprint says which.

use std::path::PathBuf;

use router_core::table::ModelDoc;
use serde::{Deserialize, Serialize};

use crate::config::{ChannelConfig, Config};

/// What a discovery result depends on: the channel's URL and key, hashed
/// one way (the key itself is never written to the cache).
pub fn fingerprint(c: &ChannelConfig) -> String {
    crate::secrets::digest(format!("{}\n{}", c.base_url, c.primary_key()).as_bytes())
}

#[derive(Serialize, Deserialize)]
pub struct CachedDiscovery {
    pub fingerprint: String,
    pub fetched_at_ms: u64,
    pub key_ok_ms: u64,
    pub models: Vec<ModelDoc>,
}

fn path(config: &Config, channel: &str) -> PathBuf {
    config.control_plane.data_dir.join("cache").join("channels").join(format!("{channel}.json"))
}

/// Write atomically (a temporary file, then a rename); a failure is logged.
pub fn save(config: &Config, channel: &str, entry: &CachedDiscovery) {
    let path = path(config, channel);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(entry).unwrap_or_default())?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!("channel {channel}: cannot write discovery cache {}: {e}", path.display());
    }
}

/// The cached result for this channel's current URL and key, if there is one.
pub fn load(config: &Config, channel: &ChannelConfig) -> Option<CachedDiscovery> {
    let bytes = std::fs::read(path(config, &channel.id)).ok()?;
    let entry: CachedDiscovery = serde_json::from_slice(&bytes).ok()?;
    // A cache for another URL or key says nothing about this one.
    (entry.fingerprint == fingerprint(channel)).then_some(entry)
}
