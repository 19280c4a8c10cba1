//! Process-wide state of the dynamic module: the channel table, channel health and
//! measured speed. A native module lives in Envoy's own address space, so every
//! worker thread reads the same values directly (the wasm filter needs shared data
//! and compare-and-swap for this). One background thread talks to the control
//! plane: it fetches the table, reports health, and folds speed samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use router_core::health::{ErrorClass, HealthMap, Policy, State};
use router_core::score::{PerfBatch, PerfMap};
use router_core::Table;

use crate::{cp_client, log};

pub struct Shared {
    table: RwLock<Option<Arc<Table>>>,
    /// Cluster names this Envoy has; channels without one are left out of plans.
    known_clusters: RwLock<Option<std::collections::HashSet<String>>>,
    health: RwLock<HealthMap>,
    /// Bumped on every health change, so the reporter sends only changes.
    health_version: AtomicU64,
    perf: RwLock<PerfMap>,
    pending_perf: Mutex<PerfBatch>,
    rotation: AtomicU64,
    started: OnceLock<()>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

pub fn shared() -> &'static Shared {
    SHARED.get_or_init(|| Shared {
        table: RwLock::new(None),
        known_clusters: RwLock::new(None),
        health: RwLock::new(HealthMap::default()),
        health_version: AtomicU64::new(0),
        perf: RwLock::new(PerfMap::default()),
        pending_perf: Mutex::new(PerfBatch::default()),
        rotation: AtomicU64::new(0),
        started: OnceLock::new(),
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where the background thread finds the control plane.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    pub address: String,
    pub token: String,
    pub poll_ms: u64,
}

impl Shared {
    pub fn table(&self) -> Option<Arc<Table>> {
        self.table.read().ok().and_then(|t| t.clone())
    }

    pub fn set_known_clusters(&self, clusters: Vec<String>) {
        if clusters.is_empty() {
            return;
        }
        if let Ok(mut k) = self.known_clusters.write() {
            *k = Some(clusters.into_iter().collect());
        }
    }

    pub fn next_rotation(&self) -> u64 {
        self.rotation.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// Run `f` with the current health and speed maps.
    pub fn with_live<T>(&self, f: impl FnOnce(&HealthMap, &PerfMap) -> T) -> Option<T> {
        let health = self.health.read().ok()?;
        let perf = self.perf.read().ok()?;
        Some(f(&health, &perf))
    }

    pub fn health_is_empty(&self) -> bool {
        self.health.read().map(|h| h.entries.is_empty()).unwrap_or(true)
    }

    /// Start the control-plane thread once per process (every filter config asks).
    pub fn start(&'static self, cp: ControlPlane) {
        self.started.get_or_init(|| {
            let spawned = std::thread::Builder::new().name("smart-router-cp".into()).spawn(move || self.run(cp));
            if let Err(e) = spawned {
                log::error(&format!("smart-router: cannot start the control-plane thread: {e}"));
            }
        });
    }

    fn run(&self, cp: ControlPlane) {
        let mut version = String::new();
        let mut last_problem: Option<String> = None;
        let mut reported = 0u64;
        let mut last_flush = 0u64;
        let period = Duration::from_millis(cp.poll_ms.max(50));
        loop {
            let problem = match self.poll_table(&cp, &mut version) {
                Ok(()) => None,
                Err(e) => {
                    Some(format!("{e}; keeping table {}", if version.is_empty() { "(none yet)" } else { &version }))
                }
            };
            if problem != last_problem {
                match &problem {
                    Some(p) => log::warn(&format!("smart-router: {p}")),
                    None if last_problem.is_some() => log::info("smart-router: control plane reachable again"),
                    None => {}
                }
                last_problem = problem;
            }
            let hv = self.health_version.load(Ordering::Acquire);
            if hv != reported {
                let body = self.health.read().map(|h| h.encode()).unwrap_or_default();
                if cp_client::post(&cp, "/v1/health-report", body.as_bytes()).is_ok_and(|s| s == 204) {
                    reported = hv;
                }
            }
            let now = now_ms();
            if now.saturating_sub(last_flush) >= 1_000 {
                last_flush = now;
                self.flush_perf(now);
            }
            // Stats reach Envoy within one poll period.
            crate::metrics::request_flush();
            std::thread::sleep(period);
        }
    }

    fn poll_table(&self, cp: &ControlPlane, version: &mut String) -> Result<(), String> {
        let (status, body) = cp_client::get(cp, "/v1/table", version)?;
        match status {
            304 => Ok(()),
            200 => {
                let known = self.known_clusters.read().map_err(|_| "lock poisoned")?.clone();
                let table = Table::from_json(&body, known.as_ref())
                    .map_err(|e| format!("control plane sent a table that does not compile: {e}"))?;
                if !table.skipped_channels.is_empty() {
                    log::warn(&format!(
                        "smart-router: channels {:?} have no Envoy cluster yet (restart Envoy with a re-rendered config to route to them)",
                        table.skipped_channels
                    ));
                }
                log::info(&format!("smart-router: table {} loaded ({} channels)", table.version, table.channels.len()));
                version.clone_from(&table.version);
                *self.table.write().map_err(|_| "lock poisoned")? = Some(Arc::new(table));
                Ok(())
            }
            s => Err(format!("control plane answered {s}")),
        }
    }

    /// One attempt's outcome on `channel`/`model` for the breakers.
    pub fn record_health(
        &self,
        channel: &str,
        model: &str,
        class: Option<ErrorClass>,
        retry_after_ms: Option<u64>,
        policy: &Policy,
    ) {
        if class == Some(ErrorClass::Client) {
            return;
        }
        if class.is_none() && !self.health.read().is_ok_and(|m| m.tracks(channel, model)) {
            return;
        }
        let now = now_ms();
        let key = HealthMap::scope_key(channel, model, class);
        let Ok(mut m) = self.health.write() else {
            return;
        };
        let was_open = m.entries.get(&key).is_some_and(|h| h.state == State::Open);
        if m.record(channel, model, now, class, retry_after_ms, policy) {
            self.health_version.fetch_add(1, Ordering::Release);
            let open = m.entries.get(&key).is_some_and(|h| h.state == State::Open);
            if open && !was_open {
                crate::metrics::ejected(channel);
                log::warn(&format!(
                    "smart-router: channel {channel} ({}) is out: {}",
                    if key == channel { "all models".to_string() } else { format!("model {model}") },
                    m.entries.get(&key).map(|h| h.reason.describe()).unwrap_or("")
                ));
            }
        }
    }

    /// Mark half-open probes a request is about to send.
    pub fn start_probes(&self, probes: &[(String, String)], policy: &Policy) {
        if probes.is_empty() {
            return;
        }
        let now = now_ms();
        if let Ok(mut m) = self.health.write() {
            for (channel, model) in probes {
                m.start_probe(channel, model, now, policy);
            }
            self.health_version.fetch_add(1, Ordering::Release);
        }
    }

    /// One attempt's speed sample; folded into the averages about once a second.
    pub fn record_perf(&self, channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>) {
        if let Ok(mut p) = self.pending_perf.lock() {
            p.add(channel, model, answered, ttfb_ms);
        }
    }

    fn flush_perf(&self, now: u64) {
        let batch = self.pending_perf.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        if let Ok(mut map) = self.perf.write() {
            batch.fold_into(&mut map, now);
        }
    }
}
