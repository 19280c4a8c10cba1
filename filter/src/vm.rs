//! This VM's share of the router's state, as the roles' [`Shared`].
//!
//! Envoy runs one VM per worker thread, and they share only Envoy's shared data
//! (process-wide per `vm_id`). Each VM keeps a decoded copy of each shared value,
//! re-read on tick when its CAS token changed, and writes with compare-and-swap
//! so concurrent workers never lose each other's updates:
//! - the table (`sar.table`, published by the service role with its version in
//!   `sar.table_version`, so workers poll a few bytes);
//! - channel health (`sar.health`): entries only for channels that failed
//!   recently, so a healthy request writes nothing;
//! - measured speed (`sar.perf`): attempts add to a local batch, folded into the
//!   shared averages about once a second.
//!
//! Stats are counted locally and handed to Envoy on tick.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::thread::LocalKey;

use router_core::health::HealthMap;
use router_core::record::Record;
use router_core::roles::intake;
use router_core::roles::stats::{Counter, Stats};
use router_core::roles::Shared;
use router_core::score::{PerfBatch, PerfMap};
use router_core::Table;

use crate::host;

pub const TABLE_KEY: &str = "sar.table";
/// The shared queue (of this `vm_id`) workers put finished requests' usage
/// records on; the service takes them off and delivers them.
pub const USAGE_QUEUE: &str = "sar.usage";
pub const VM_ID: &str = "smart_router";
pub const TABLE_VERSION_KEY: &str = "sar.table_version";
pub const HEALTH_KEY: &str = "sar.health";
const PERF_KEY: &str = "sar.perf";

/// A value with a text form stored under one shared-data key.
trait SharedValue: Default + Clone + 'static {
    fn decode(text: &str) -> Self;
    fn encode(&self) -> String;
}

impl SharedValue for HealthMap {
    fn decode(text: &str) -> Self {
        HealthMap::decode(text)
    }
    fn encode(&self) -> String {
        HealthMap::encode(self)
    }
}

impl SharedValue for PerfMap {
    fn decode(text: &str) -> Self {
        PerfMap::decode(text)
    }
    fn encode(&self) -> String {
        PerfMap::encode(self)
    }
}

/// This VM's copy and the CAS token it was read at (None: must re-read).
type Local<T> = RefCell<(T, Option<u32>)>;

thread_local! {
    static TABLE: RefCell<Option<Rc<Table>>> = const { RefCell::new(None) };
    static TABLE_VERSION: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static KNOWN_CLUSTERS: RefCell<Option<HashSet<String>>> = const { RefCell::new(None) };
    static HEALTH: Local<HealthMap> = RefCell::new((HealthMap::default(), None));
    static PERF: Local<PerfMap> = RefCell::new((PerfMap::default(), None));
    static PERF_PENDING: RefCell<PerfBatch> = RefCell::new(PerfBatch::default());
    static PERF_FLUSHED_MS: RefCell<u64> = const { RefCell::new(0) };
    static STATS: RefCell<Stats> = RefCell::new(Stats::default());
    /// Metric ids by full name: defined once per VM, then only incremented.
    static METRIC_IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// This VM's record ids: a random prefix and a count.
    static RECORD_IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    static QUEUE: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
    /// Records not yet on the queue: their lines, and how many.
    static RECORDS: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// The roles' shared state in this VM: thread-locals and Envoy's shared data.
#[derive(Clone, Copy)]
pub struct Vm;

impl Shared for Vm {
    type Table = Rc<Table>;

    fn table(&self) -> Option<Rc<Table>> {
        if let Some(t) = TABLE.with(|t| t.borrow().clone()) {
            return Some(t);
        }
        // A VM can see its first request before its first tick.
        refresh_table();
        TABLE.with(|t| t.borrow().clone())
    }

    fn now_ms(&self) -> u64 {
        host::now_ms()
    }

    fn health<R>(&self, read: impl FnOnce(&HealthMap) -> R) -> R {
        HEALTH.with(|l| read(&l.borrow().0))
    }

    fn update_health(&self, change: impl FnMut(&mut HealthMap) -> bool) -> bool {
        update(HEALTH_KEY, &HEALTH, change)
    }

    fn sync_health(&self) {
        refresh(HEALTH_KEY, &HEALTH, |_| {});
    }

    fn perf<R>(&self, read: impl FnOnce(&PerfMap) -> R) -> R {
        PERF.with(|l| read(&l.borrow().0))
    }

    fn add_perf(&self, channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>) {
        PERF_PENDING.with(|p| p.borrow_mut().add(channel, model, answered, ttfb_ms));
    }

    fn stats(&self, record: impl FnOnce(&mut Stats)) {
        STATS.with(|s| record(&mut s.borrow_mut()));
    }

    fn next_record_id(&self) -> String {
        let (mut prefix, n) = RECORD_IDS.get();
        if prefix == 0 {
            prefix = random_prefix();
        }
        RECORD_IDS.set((prefix, n + 1));
        Record::id_for(prefix, n + 1)
    }

    fn emit_record(&self, record: Record) {
        let full = RECORDS.with(|r| {
            let mut r = r.borrow_mut();
            record.encode_line(&mut r.0);
            r.0.push(b'\n');
            r.1 += 1;
            r.1 >= RECORDS_PER_MESSAGE
        });
        if full {
            send_records();
        }
    }
}

/// Records a worker puts on the service's queue in one message (and at every
/// tick whatever waits): one queue crossing per request would cost more than
/// making the record.
const RECORDS_PER_MESSAGE: usize = 64;

/// Put this worker's waiting records on the service's queue.
pub fn send_records() {
    let Some((lines, n)) = RECORDS.with(|r| {
        let mut r = r.borrow_mut();
        (r.1 > 0).then(|| (std::mem::take(&mut r.0), std::mem::take(&mut r.1)))
    }) else {
        return;
    };
    let queue = QUEUE.get().or_else(|| {
        let q = host::resolve_queue(VM_ID, USAGE_QUEUE);
        QUEUE.set(q);
        q
    });
    if !queue.is_some_and(|q| host::enqueue(q, &lines)) {
        // (The service registers the queue when Envoy starts; records that
        // find none are lost, and said so.)
        QUEUE.set(None);
        Vm.stats(|s| s.add(Counter::UsageRecordsDropped, "", n as u64));
        log::warn!("smart-router: {n} usage records dropped: no usage queue");
    }
}

/// A random record-id prefix for this VM (the clock, should there be no
/// randomness): ids of different VMs and Envoys do not meet.
pub(crate) fn random_prefix() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b) | 1,
        Err(_) => host::now_nanos() | 1,
    }
}

pub fn set_known_clusters(clusters: Vec<String>) {
    if !clusters.is_empty() {
        KNOWN_CLUSTERS.with(|k| *k.borrow_mut() = Some(clusters.into_iter().collect()));
    }
}

/// Pick up a newer table from shared data, if the service published one.
pub fn refresh_table() {
    let Some(version) = host::shared_data(TABLE_VERSION_KEY) else {
        return;
    };
    if TABLE_VERSION.with(|v| *v.borrow() == version) {
        return;
    }
    let Some(bytes) = host::shared_data(TABLE_KEY) else {
        return;
    };
    match KNOWN_CLUSTERS.with(|k| intake::compile(&bytes, k.borrow().as_ref())) {
        Ok(table) => TABLE.with(|t| *t.borrow_mut() = Some(Rc::new(table))),
        // The service compiled it already; if it still fails here, keep the old one.
        Err(e) => log::error!("smart-router: table rejected, keeping the last good one: {e}"),
    }
    TABLE_VERSION.with(|v| *v.borrow_mut() = version);
}

/// A worker's tick: new tables, other workers' health and speed, this worker's
/// speed batch (about once a second) and stats.
pub fn tick() {
    refresh_table();
    refresh(HEALTH_KEY, &HEALTH, |_| {});
    let now = host::now_ms();
    let due = PERF_FLUSHED_MS.with(|t| {
        let mut t = t.borrow_mut();
        let due = now.saturating_sub(*t) >= 1_000;
        if due {
            *t = now;
        }
        due
    });
    if due {
        let batch = PERF_PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        if !batch.is_empty() {
            update(PERF_KEY, &PERF, |map| {
                batch.fold_into(map, now);
                true
            });
        }
    }
    // Expire locally too: a channel with no traffic writes nothing that would.
    refresh(PERF_KEY, &PERF, |map| map.expire(now));
    flush_stats();
    send_records();
}

/// Hand the pending counts to Envoy: `sar.<label>.<label>=<value>.<name>`,
/// which the bootstrap's stats tags turn into `sar_<label>_<name>{<label>="<value>"}`.
pub fn flush_stats() {
    let pending = STATS.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_empty() {
            None
        } else {
            Some(s.drain())
        }
    });
    let Some(pending) = pending else {
        return;
    };
    let samples = STATS.with(|s| s.borrow_mut().drain_samples());
    METRIC_IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        let mut id_of = |name: String, histogram: bool| match ids.get(&name) {
            Some(id) => Some(*id),
            None => host::define_metric(&name, histogram).inspect(|&id| {
                ids.insert(name, id);
            }),
        };
        for (counter, label, by) in pending {
            let name = if counter.has_label() {
                format!("sar.{0}.{0}={label}.{1}", counter.label(), counter.name())
            } else {
                format!("sar.{}.{}", counter.label(), counter.name())
            };
            if let Some(id) = id_of(name, false) {
                host::increment(id, i64::try_from(by).unwrap_or(i64::MAX));
            }
        }
        for (h, label, values) in samples {
            if let Some(id) = id_of(format!("sar.{0}.{0}={label}.{1}", h.label(), h.name()), true) {
                for value in values {
                    host::record(id, value);
                }
            }
        }
    });
}

fn read<T: SharedValue>(key: &str) -> (T, Option<u32>) {
    let (bytes, cas) = host::shared_data_cas(key);
    (bytes.map(|b| T::decode(&String::from_utf8_lossy(&b))).unwrap_or_default(), cas)
}

/// Re-read the shared value if another worker changed it; `fixup` runs on a
/// fresh copy (e.g. to expire old entries).
fn refresh<T: SharedValue>(key: &str, local: &'static LocalKey<Local<T>>, fixup: impl FnOnce(&mut T)) {
    // (One host call: the value comes with its CAS token, and is decoded only
    // when it changed.)
    let (bytes, cas) = host::shared_data_cas(key);
    if local.with(|l| l.borrow().1 == cas && cas.is_some()) {
        return;
    }
    let mut value = bytes.map(|b| T::decode(&String::from_utf8_lossy(&b))).unwrap_or_default();
    fixup(&mut value);
    local.with(|l| *l.borrow_mut() = (value, cas));
}

/// Apply `change` with compare-and-swap, retrying a lost race a few times.
/// True when `change` changed something and it was written.
fn update<T: SharedValue>(
    key: &str,
    local: &'static LocalKey<Local<T>>,
    mut change: impl FnMut(&mut T) -> bool,
) -> bool {
    for attempt in 0..8 {
        // First from this worker's copy when it is known to be current (its
        // CAS token is that of the last read); a lost race reads afresh.
        let known = if attempt == 0 { local.with(|l| l.borrow().1.is_some()) } else { false };
        let (mut value, cas) = if known { local.with(|l| l.borrow().clone()) } else { read::<T>(key) };
        if !change(&mut value) {
            return false;
        }
        if host::set_shared_data_cas(key, value.encode().as_bytes(), cas) {
            // Our write moved the CAS token; the next tick re-reads it.
            local.with(|l| *l.borrow_mut() = (value, None));
            return true;
        }
    }
    false
}
