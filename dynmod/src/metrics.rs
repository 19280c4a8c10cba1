//! Router stats as Envoy counters with labels, defined when the router's filter
//! config is created (Envoy allows it only then): `channel_attempts`,
//! `channel_failures`, `channel_ejections` (label `channel`) and `model_requests`,
//! `model_failures`, `model_failovers` (label `model`, as the client wrote it),
//! named `sar.<counter>` in Envoy's `dynamicmodulescustom` namespace. The rendered
//! bootstrap turns on `dynamic_modules_strip_custom_stat_prefix`, so Prometheus
//! shows them exactly as the wasm filter's: `sar_model_requests{model="..."}`.
//!
//! Requests only add to a pending map. Every poll period the background thread
//! asks Envoy (through a config scheduler) to run the flush on its main thread,
//! where the counters are incremented: stat lookups by label stay off the request
//! path, and counts reach Envoy even when traffic stops.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::abi::{self, EnvoyFilterConfig, MetricsResult, ModuleBuffer};

#[derive(Clone, Copy)]
enum Counter {
    ChannelAttempts,
    ChannelFailures,
    ChannelEjections,
    ModelRequests,
    ModelFailures,
    ModelFailovers,
}

const ALL: [(&str, &str); 6] = [
    ("sar.channel_attempts", "channel"),
    ("sar.channel_failures", "channel"),
    ("sar.channel_ejections", "channel"),
    ("sar.model_requests", "model"),
    ("sar.model_failures", "model"),
    ("sar.model_failovers", "model"),
];

/// Distinct model labels per process; the client chooses the spelling, so past
/// this new ones count under `other` and the stats cannot grow without bound.
const MAX_MODEL_LABELS: usize = 1000;

/// The config that defined the counters: its Envoy pointer, scheduler and ids
/// (pointers kept as integers: they are used only on Envoy's threads).
struct Flusher {
    config: usize,
    scheduler: usize,
    ids: [usize; 6],
}

static FLUSHER: Mutex<Option<Flusher>> = Mutex::new(None);
/// Pending counts by label value, one slot per [`Counter`] (a channel's and a
/// model's counters never share a slot, so one map holds both).
type Pending = HashMap<String, [u64; 6]>;

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);
static MODEL_LABELS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn bump(pending: &mut Pending, counter: Counter, who: &str, by: u64) {
    if by == 0 {
        return;
    }
    // Look up before inserting: a label's key is allocated once per flush period.
    match pending.get_mut(who) {
        Some(counts) => counts[counter as usize] += by,
        None => {
            let mut counts = [0; 6];
            counts[counter as usize] = by;
            pending.insert(who.to_string(), counts);
        }
    }
}

/// Define the counters (only valid inside `on_http_filter_config_new`).
pub fn define(config: EnvoyFilterConfig) {
    let mut ids = [0usize; 6];
    for (i, (name, label)) in ALL.iter().enumerate() {
        let mut labels = [ModuleBuffer::of(label.as_bytes())];
        // SAFETY: Envoy's config pointer is valid during config_new; buffers live for
        // the call and `ids[i]` is written by Envoy.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                ModuleBuffer::of(name.as_bytes()),
                labels.as_mut_ptr(),
                1,
                &mut ids[i],
            )
        };
        if r != MetricsResult::Success {
            crate::log::warn(&format!("smart-router: cannot define counter {name}: {r:?}; stats are off"));
            return;
        }
    }
    // SAFETY: valid config pointer; the scheduler is deleted with the config.
    let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
    if scheduler.is_null() {
        crate::log::warn("smart-router: no config scheduler; stats are off");
        return;
    }
    if let Ok(mut f) = FLUSHER.lock() {
        if let Some(old) = f.replace(Flusher { config: config as usize, scheduler: scheduler as usize, ids }) {
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

fn model_label(model: &str) -> &str {
    let Ok(mut labels) = MODEL_LABELS.lock() else {
        return "other";
    };
    let labels = labels.get_or_insert_with(HashSet::new);
    if labels.contains(model) {
        return model;
    }
    if labels.len() >= MAX_MODEL_LABELS {
        return "other";
    }
    labels.insert(model.to_string());
    model
}

/// One finished request: the channels tried in order (the last one answered) and
/// whether the client got a failure.
pub fn record(model: &str, channels_tried: &[&str], failed: bool) {
    let model = model_label(model);
    let Ok(mut pending) = PENDING.lock() else {
        return;
    };
    let pending = pending.get_or_insert_with(HashMap::new);
    let n = channels_tried.len();
    for (i, ch) in channels_tried.iter().enumerate() {
        bump(pending, Counter::ChannelAttempts, ch, 1);
        if i + 1 < n || failed {
            bump(pending, Counter::ChannelFailures, ch, 1);
        }
    }
    bump(pending, Counter::ModelRequests, model, 1);
    bump(pending, Counter::ModelFailovers, model, n.saturating_sub(1) as u64);
    if failed {
        bump(pending, Counter::ModelFailures, model, 1);
    }
}

pub fn ejected(channel: &str) {
    if let Ok(mut pending) = PENDING.lock() {
        bump(pending.get_or_insert_with(HashMap::new), Counter::ChannelEjections, channel, 1);
    }
}

/// Background thread: ask Envoy's main thread to flush, when there is something.
pub fn request_flush() {
    let has_pending = PENDING.lock().map(|p| p.as_ref().is_some_and(|m| !m.is_empty())).unwrap_or(false);
    if !has_pending {
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
    let pending = PENDING.lock().map(|mut p| p.take().unwrap_or_default()).unwrap_or_default();
    for (label, counts) in pending {
        for (id, by) in f.ids.iter().zip(counts).filter(|(_, by)| *by > 0) {
            let mut values = [ModuleBuffer::of(label.as_bytes())];
            // SAFETY: on Envoy's main thread with the config that defined the ids.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    config,
                    *id,
                    values.as_mut_ptr(),
                    1,
                    by,
                );
            }
        }
    }
}
