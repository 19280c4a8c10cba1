//! Measured speed and reliability per channel+model, shared by every
//! Envoy worker. Attempts add to a local batch (no host call); the attempt role's
//! tick folds the batch into the shared moving averages (`sar.perf`) with
//! compare-and-swap about once a second, and every worker re-reads them on tick.

use std::cell::RefCell;

use router_core::score::{PerfBatch, PerfMap};

use crate::{host, shared};

const PERF_KEY: &str = "sar.perf";

thread_local! {
    static LOCAL: shared::Local<PerfMap> = RefCell::new((PerfMap::default(), None));
    static PENDING: RefCell<PerfBatch> = RefCell::new(PerfBatch::default());
    /// Attempts this VM decided about timing, for sampling.
    static TIMING_COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static LAST_FLUSH_MS: RefCell<u64> = const { RefCell::new(0) };
}

/// Timed samples a channel+model needs before timing is sampled.
const WARM_UP: u64 = 16;
/// After warm-up, one attempt in this many is timed (two clock reads saved on the rest).
const SAMPLE_EVERY: u64 = 4;

/// Whether to time this attempt: always while a channel+model has few samples,
/// then one in [`SAMPLE_EVERY`]. Outcomes are always counted.
pub fn should_time(channel: &str, model: &str) -> bool {
    let n = TIMING_COUNTER.with(|c| {
        let v = c.get().wrapping_add(1);
        c.set(v);
        v
    });
    let samples = LOCAL.with(|l| l.borrow().0.get(channel, model).map(|p| p.samples).unwrap_or(0));
    samples < WARM_UP || n.is_multiple_of(SAMPLE_EVERY)
}

/// One attempt's outcome; `ttfb_ms` when it was timed and answered.
pub fn record(channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>) {
    PENDING.with(|p| p.borrow_mut().add(channel, model, answered, ttfb_ms));
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
        batch.fold_into(map, now);
        true
    });
}
