//! The router's stats as Envoy counters with labels, defined when the router's
//! filter config is created (Envoy allows it only then): one counter per
//! `router_core::roles::stats::Counter`, named `sar.<label>_<name>` in Envoy's
//! `dynamicmodulescustom` namespace with its label (`channel` or `model`). The
//! rendered bootstrap turns on `dynamic_modules_strip_custom_stat_prefix`, so
//! Prometheus shows them exactly as the wasm filter's:
//! `sar_model_requests{model="..."}`.
//!
//! Requests only add to the process's pending stats. Every poll period the
//! background thread asks Envoy (through a config scheduler) to run the flush on
//! its main thread, where the counters are incremented: stat lookups by label
//! stay off the request path, and counts reach Envoy even when traffic stops.

use std::sync::Mutex;

use router_core::roles::stats::{Counter, Histogram};

use crate::abi::{self, EnvoyFilterConfig, MetricsResult, ModuleBuffer};
use crate::state;

/// The config that defined the counters: its Envoy pointer, scheduler and ids
/// (pointers kept as integers: they are used only on Envoy's threads).
struct Flusher {
    config: usize,
    scheduler: usize,
    ids: [usize; Counter::ALL.len()],
    histograms: [usize; Histogram::ALL.len()],
}

static FLUSHER: Mutex<Option<Flusher>> = Mutex::new(None);

/// Define the counters (only valid inside `on_http_filter_config_new`).
pub fn define(config: EnvoyFilterConfig) {
    let mut ids = [0usize; Counter::ALL.len()];
    for (i, counter) in Counter::ALL.iter().enumerate() {
        let name = format!("sar.{}", counter.metric());
        let mut labels = [ModuleBuffer::of(counter.label().as_bytes())];
        let n = usize::from(counter.has_label());
        // SAFETY: Envoy's config pointer is valid during config_new; buffers live for
        // the call and `ids[i]` is written by Envoy.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                ModuleBuffer::of(name.as_bytes()),
                labels.as_mut_ptr(),
                n,
                &mut ids[i],
            )
        };
        if r != MetricsResult::Success {
            log::warn!("smart-router: cannot define counter {name}: {r:?}; stats are off");
            return;
        }
    }
    let mut histograms = [0usize; Histogram::ALL.len()];
    for (i, h) in Histogram::ALL.iter().enumerate() {
        let name = format!("sar.{}", h.metric());
        let mut labels = [ModuleBuffer::of(h.label().as_bytes())];
        // SAFETY: as for the counters.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                config,
                ModuleBuffer::of(name.as_bytes()),
                labels.as_mut_ptr(),
                1,
                &mut histograms[i],
            )
        };
        if r != MetricsResult::Success {
            log::warn!("smart-router: cannot define histogram {name}: {r:?}; stats are off");
            return;
        }
    }
    // SAFETY: valid config pointer; the scheduler is deleted with the config.
    let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
    if scheduler.is_null() {
        log::warn!("smart-router: no config scheduler; stats are off");
        return;
    }
    if let Ok(mut f) = FLUSHER.lock() {
        if let Some(old) =
            f.replace(Flusher { config: config as usize, scheduler: scheduler as usize, ids, histograms })
        {
            // SAFETY: the old scheduler was made by Envoy and is deleted once.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(old.scheduler as _) };
        }
    }
}

/// The config is going away: stop flushing through it.
pub fn forget(config: EnvoyFilterConfig) {
    if let Ok(mut f) = FLUSHER.lock() {
        if f.as_ref().is_some_and(|x| x.config == config as usize) {
            if let Some(old) = f.take() {
                // SAFETY: as in `define`.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(old.scheduler as _) };
            }
        }
    }
}

/// Background thread: ask Envoy's main thread to flush, when there is something.
pub fn request_flush() {
    if !state::process().has_stats() {
        return;
    }
    if let Ok(f) = FLUSHER.lock() {
        if let Some(f) = f.as_ref() {
            // SAFETY: commit is documented safe from any thread; the scheduler lives
            // until `forget`, which takes this same lock.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(f.scheduler as _, 0) };
        }
    }
}

/// Main thread (`on_http_filter_config_scheduled`): hand the pending counts to Envoy.
pub fn flush(config: EnvoyFilterConfig) {
    let Ok(flusher) = FLUSHER.lock() else {
        return;
    };
    let Some(f) = flusher.as_ref().filter(|f| f.config == config as usize) else {
        return;
    };
    let (counts, samples) = state::process().drain_stats();
    for (counter, label, by) in counts {
        let Some(id) = Counter::ALL.iter().position(|c| *c == counter).and_then(|i| f.ids.get(i)) else {
            continue;
        };
        let mut values = [ModuleBuffer::of(label.as_bytes())];
        // SAFETY: on Envoy's main thread with the config that defined the ids.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                config,
                *id,
                values.as_mut_ptr(),
                usize::from(counter.has_label()),
                by,
            );
        }
    }
    for (h, label, values) in samples {
        let Some(id) = Histogram::ALL.iter().position(|x| *x == h).and_then(|i| f.histograms.get(i)) else {
            continue;
        };
        let mut labels = [ModuleBuffer::of(label.as_bytes())];
        for value in values {
            // SAFETY: as above.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                    config,
                    *id,
                    labels.as_mut_ptr(),
                    1,
                    value,
                );
            }
        }
    }
}
