//! Measured speed and reliability per channel+model (SPEC S4), shared by every
//! Envoy worker. Attempts add to a local batch (no host call); the attempt role's
//! tick folds the batch into the shared moving averages (`sar.perf`) with
//! compare-and-swap about once a second, and every worker re-reads them on tick.

use std::cell::RefCell;
use std::collections::HashMap;

use router_core::health::model_key;
use router_core::score::PerfMap;

use crate::{host, shared};

const PERF_KEY: &str = "sar.perf";

thread_local! {
    static LOCAL: shared::Local<PerfMap> = RefCell::new((PerfMap::default(), None));
    /// key -> (attempts, answered, summed time to first byte in ms)
    static PENDING: RefCell<HashMap<String, (u64, u64, f64)>> = RefCell::new(HashMap::new());
    static LAST_FLUSH_MS: RefCell<u64> = const { RefCell::new(0) };
}

pub fn record(channel: &str, model: &str, answered: bool, ttfb_ms: f64) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let e = p.entry(model_key(channel, model)).or_insert((0, 0, 0.0));
        e.0 += 1;
        if answered {
            e.1 += 1;
            e.2 += ttfb_ms.max(0.0);
        }
    });
}

pub fn with<T>(f: impl FnOnce(&PerfMap) -> T) -> T {
    LOCAL.with(|l| f(&l.borrow().0))
}

/// Re-read the shared averages if they changed; flush this worker's batch once a second.
pub fn tick() {
    let now = host::now_ms();
    let due = LAST_FLUSH_MS.with(|t| {
        let mut t = t.borrow_mut();
        let due = now.saturating_sub(*t) >= 1_000;
        if due {
            *t = now;
        }
        due
    });
    if due {
        flush();
    }
    // Expire locally too: a channel with no traffic writes nothing that would.
    shared::refresh(PERF_KEY, &LOCAL, |map| map.expire(now));
}

fn flush() {
    let batch = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if batch.is_empty() {
        return;
    }
    let now = host::now_ms();
    shared::update(PERF_KEY, &LOCAL, |map| {
        for (key, &(n, ok, sum)) in &batch {
            map.merge(key, n, ok, sum, now);
        }
        map.expire(now);
        true
    });
}
