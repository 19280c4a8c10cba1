//! Router stats in Envoy's admin `/stats` (`wasmcustom.sar.*`) and
//! `/stats/prometheus` (`sar_*`). Names embed the channel or model as
//! `sar.channel.channel=<id>.<counter>` / `sar.model.model=<name>.<counter>`; the
//! bootstrap's `stats_tags` cut out the `x=<value>.` part into a label, so
//! Prometheus shows `sar_channel_attempts{channel="a"}`, `sar_model_requests{model="m"}`.
//!
//! Per channel: `attempts` (every attempt sent), `failures` (attempts that failed),
//! `ejections` (times a breaker opened or the channel was taken out).
//! Per model (as the client asked for it): `requests`, `failures` (the client got
//! an error after every attempt failed), `failovers` (attempts after the first).
//! Envoy's own `cluster.<cluster>.upstream_rq_*` stats count the same traffic per
//! cluster at the HTTP level.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::host;

thread_local! {
    /// Metric ids by full name: defined once per VM, then only incremented.
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Counts not yet handed to Envoy. Every host call costs CPU on Envoy's side, so
    /// requests only add here and the tick flushes (stats lag by at most a tick).
    static PENDING: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
}

/// Distinct model labels a VM creates. The label is what the client wrote, and a
/// client can write endless spellings (`tag:free`, `TAG: free`, ...): past this,
/// new ones count under `other` so Envoy's stats cannot grow without bound.
const MAX_MODEL_LABELS: usize = 1000;

thread_local! {
    static MODEL_LABELS: RefCell<std::collections::HashSet<String>> = RefCell::new(std::collections::HashSet::new());
}

fn model_label(model: &str) -> String {
    let l = label(model);
    MODEL_LABELS.with(|m| {
        let mut m = m.borrow_mut();
        if m.contains(&l) {
            return l;
        }
        if m.len() >= MAX_MODEL_LABELS {
            return "other".to_string();
        }
        m.insert(l.clone());
        l
    })
}

/// A name part safe for stat names and tag regexes: `.` separates stat name parts.
fn label(s: &str) -> String {
    s.chars().take(120).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

pub fn bump(kind: &str, who: &str, counter: &str, by: i64) {
    if by == 0 {
        return;
    }
    let name = format!("sar.{kind}.{kind}={}.{counter}", label(who));
    PENDING.with(|p| *p.borrow_mut().entry(name).or_insert(0) += by);
}

/// Hand the pending counts to Envoy (called from the root context's tick).
pub fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if pending.is_empty() {
        return;
    }
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        for (name, by) in pending {
            let id = match ids.get(&name) {
                Some(id) => Some(*id),
                None => host::define_counter(&name).inspect(|&id| {
                    ids.insert(name, id);
                }),
            };
            if let Some(id) = id {
                host::increment(id, by);
            }
        }
    });
}

/// One finished request: the channels tried in order (the last one answered) and
/// whether the client got a failure.
pub fn record(model: &str, channels_tried: &[&str], failed: bool) {
    let n = channels_tried.len();
    for (i, ch) in channels_tried.iter().enumerate() {
        bump("channel", ch, "attempts", 1);
        if i + 1 < n || failed {
            bump("channel", ch, "failures", 1);
        }
    }
    let model = model_label(model);
    bump("model", &model, "requests", 1);
    bump("model", &model, "failovers", n.saturating_sub(1) as i64);
    if failed {
        bump("model", &model, "failures", 1);
    }
}
