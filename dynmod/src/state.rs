//! Process-wide state of the dynamic module, as the roles' [`Shared`]: the
//! channel table, channel health, measured speed and stats. A native module
//! lives in Envoy's own address space, so every worker thread reads the same
//! values directly (the wasm filter needs shared data and compare-and-swap for
//! this). One background thread talks to the control plane: it fetches the
//! table, reports health, and folds speed samples.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use router_core::health::HealthMap;
use router_core::record::Record;
use router_core::roles::config::ControlPlaneLink;
use router_core::roles::delivery::RecordBuffer;
use router_core::roles::intake::{Answer, TableFollower};
use router_core::roles::live;
use router_core::roles::stats::{Counter, Stats};
use router_core::roles::Shared;
use router_core::score::{PerfBatch, PerfMap};
use router_core::Table;

pub struct Process {
    table: RwLock<Option<Arc<Table>>>,
    /// Cluster names this Envoy has; channels without one are left out of plans.
    known_clusters: RwLock<Option<HashSet<String>>>,
    health: RwLock<HealthMap>,
    /// Bumped on every health change, so the reporter sends only changes.
    health_version: AtomicU64,
    perf: RwLock<PerfMap>,
    pending_perf: Mutex<PerfBatch>,
    stats: Mutex<Stats>,
    /// Usage records until the control plane has them.
    records: Mutex<RecordBuffer>,
    /// This process's record ids: a random prefix and a count.
    record_prefix: u64,
    record_count: AtomicU64,
    started: OnceLock<()>,
}

static PROCESS: OnceLock<Process> = OnceLock::new();

pub fn process() -> &'static Process {
    PROCESS.get_or_init(|| Process {
        table: RwLock::new(None),
        known_clusters: RwLock::new(None),
        health: RwLock::new(HealthMap::default()),
        health_version: AtomicU64::new(0),
        perf: RwLock::new(PerfMap::default()),
        pending_perf: Mutex::new(PerfBatch::default()),
        stats: Mutex::new(Stats::default()),
        records: Mutex::new(RecordBuffer::default()),
        record_prefix: random_prefix(),
        record_count: AtomicU64::new(0),
        started: OnceLock::new(),
    })
}

/// A random record-id prefix for this process (the clock, should there be no
/// randomness): ids of different Envoys do not meet.
fn random_prefix() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b) | 1,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Shared for Process {
    type Table = Arc<Table>;

    fn table(&self) -> Option<Arc<Table>> {
        self.table.read().ok().and_then(|t| t.clone())
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn health<R>(&self, read: impl FnOnce(&HealthMap) -> R) -> R {
        match self.health.read() {
            Ok(h) => read(&h),
            // A panic while holding the lock poisoned it: health is advisory.
            Err(_) => read(&HealthMap::default()),
        }
    }

    fn update_health(&self, mut change: impl FnMut(&mut HealthMap) -> bool) -> bool {
        let Ok(mut h) = self.health.write() else {
            return false;
        };
        let changed = change(&mut h);
        if changed {
            self.health_version.fetch_add(1, Ordering::Release);
        }
        changed
    }

    fn perf<R>(&self, read: impl FnOnce(&PerfMap) -> R) -> R {
        match self.perf.read() {
            Ok(p) => read(&p),
            Err(_) => read(&PerfMap::default()),
        }
    }

    fn add_perf(&self, channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>) {
        if let Ok(mut p) = self.pending_perf.lock() {
            p.add(channel, model, answered, ttfb_ms);
        }
    }

    fn stats(&self, record: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            record(&mut s);
        }
    }

    fn next_record_id(&self) -> String {
        let n = self.record_count.fetch_add(1, Ordering::Relaxed) + 1;
        Record::id_for(self.record_prefix, n)
    }

    fn emit_record(&self, record: Record) {
        let mut line = Vec::with_capacity(256);
        record.encode_line(&mut line);
        match self.records.lock() {
            Ok(mut r) => r.push(line),
            Err(_) => self.stats(|s| s.add(Counter::UsageRecordsDropped, "", 1)),
        }
    }
}

impl Process {
    pub fn set_known_clusters(&self, clusters: Vec<String>) {
        if clusters.is_empty() {
            return;
        }
        if let Ok(mut k) = self.known_clusters.write() {
            *k = Some(clusters.into_iter().collect());
        }
    }

    /// What the stats flush hands to Envoy.
    pub fn drain_stats(&self) -> (Vec<(Counter, String, u64)>, router_core::roles::stats::Samples) {
        self.stats
            .lock()
            .map(|mut s| if s.is_empty() { (Vec::new(), Vec::new()) } else { (s.drain(), s.drain_samples()) })
            .unwrap_or_default()
    }

    pub fn has_stats(&self) -> bool {
        self.stats.lock().is_ok_and(|s| !s.is_empty())
    }

    /// Start the control-plane thread once per process (every filter config asks).
    pub fn start(&'static self, link: ControlPlaneLink) {
        self.started.get_or_init(|| {
            let spawned = std::thread::Builder::new().name("smart-router-cp".into()).spawn(move || self.run(link));
            if let Err(e) = spawned {
                log::error!("smart-router: cannot start the control-plane thread: {e}");
            }
        });
    }

    fn run(&self, link: ControlPlaneLink) {
        let client = ControlPlane::new(&link);
        let mut follower = TableFollower::default();
        let mut reported = 0u64;
        let mut last_flush = 0u64;
        let mut last_report = 0u64;
        let mut usage_failing = false;
        let period = Duration::from_millis(link.poll_ms.max(50));
        loop {
            let answer = client.table(follower.version());
            let known = self.known_clusters.read().ok().and_then(|k| k.clone());
            let body;
            let answer = match answer {
                Ok((200, b)) => {
                    body = b;
                    Answer::Table(&body)
                }
                Ok((304, _)) => Answer::NotModified,
                Ok((status, _)) => Answer::Status(status, None),
                Err(e) => Answer::Unreachable(e),
            };
            if let Some(table) = follower.on_answer(answer, known.as_ref()) {
                if let Ok(mut t) = self.table.write() {
                    *t = Some(Arc::new(table));
                }
            }
            if let Some(failing) = self.deliver_records(&client).filter(|&f| f != usage_failing) {
                let waiting = self.records.lock().map(|r| r.len()).unwrap_or(0);
                match failing {
                    true => {
                        log::warn!("smart-router: the control plane does not take usage records; {waiting} waiting")
                    }
                    false => log::info!("smart-router: usage records delivered again"),
                }
                usage_failing = failing;
            }
            let hv = self.health_version.load(Ordering::Acquire);
            // Other Envoys' counts matter only where client tokens have limits.
            let tokens_limited = self.table().is_some_and(|t| t.tokens_limited);
            let due = tokens_limited && now_ms().saturating_sub(last_report) >= router_core::roles::REPORT_EVERY_MS;
            if hv != reported || due {
                last_report = now_ms();
                let report = self.health(HealthMap::encode);
                if let Some(answer) = client.report_health(report.as_bytes(), self.record_prefix) {
                    reported = hv;
                    live::take_remote_counts(self, &answer);
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

    /// Send what is due, batch by batch, until the control plane refuses one or
    /// nothing more is due: whether the last batch sent was refused (none when
    /// none was sent).
    fn deliver_records(&self, client: &ControlPlane) -> Option<bool> {
        let mut refused = None;
        loop {
            let Some(body) = self.records.lock().ok().and_then(|mut r| r.next_batch(now_ms())) else {
                return refused;
            };
            let stored = client.send_records(body);
            let dropped = match self.records.lock() {
                Ok(mut r) => {
                    r.delivered(stored);
                    r.take_dropped()
                }
                Err(_) => return Some(true),
            };
            if dropped > 0 {
                self.stats(|s| s.add(Counter::UsageRecordsDropped, "", dropped));
                log::warn!("smart-router: {dropped} usage records dropped: the buffer for the control plane is full");
            }
            if !stored {
                return Some(true);
            }
            refused = Some(false);
        }
    }

    fn flush_perf(&self, now: u64) {
        let batch = self.pending_perf.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        if let Ok(mut map) = self.perf.write() {
            batch.fold_into(&mut map, now);
        }
    }
}

/// The control plane over HTTP/1.1, with bounded timeouts: a stalled control
/// plane can delay the background thread but never a request (requests only
/// read what this thread stored).
struct ControlPlane {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

/// A table for 100,000 models is a few tens of MB; refuse anything absurd.
const MAX_TABLE: u64 = 512 * 1024 * 1024;

impl ControlPlane {
    fn new(link: &ControlPlaneLink) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        Self { agent, base: format!("http://{}", link.address), authorization: format!("Bearer {}", link.token) }
    }

    /// `GET /v1/table` with `If-None-Match`: the status and body.
    fn table(&self, version: &str) -> Result<(u16, Vec<u8>), String> {
        let mut request =
            self.agent.get(format!("{}/v1/table", self.base)).header("authorization", &self.authorization);
        if !version.is_empty() {
            request = request.header("if-none-match", version);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if status != 200 {
            return Ok((status, Vec::new()));
        }
        let body = response.body_mut().with_config().limit(MAX_TABLE).read_to_vec().map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// `POST /v1/usage` with one batch of records; true when they are stored.
    fn send_records(&self, body: Vec<u8>) -> bool {
        self.agent
            .post(format!("{}/v1/usage", self.base))
            .header("authorization", &self.authorization)
            .header("content-type", "application/x-ndjson")
            .send(&body[..])
            .is_ok_and(|r| r.status().as_u16() == 204)
    }

    /// `POST /v1/health-report` from this Envoy (`node`); the control plane's
    /// answer (what other Envoys counted) when it took it.
    fn report_health(&self, report: &[u8], node: u64) -> Option<Vec<u8>> {
        let mut r = self
            .agent
            .post(format!("{}/v1/health-report", self.base))
            .header("authorization", &self.authorization)
            .header("content-type", "text/plain")
            .header(router_core::roles::NODE_HEADER, &router_core::roles::node_id(node))
            .send(report)
            .ok()?;
        match r.status().as_u16() {
            200 => r.body_mut().read_to_vec().ok(),
            204 => Some(Vec::new()),
            _ => None,
        }
    }
}
