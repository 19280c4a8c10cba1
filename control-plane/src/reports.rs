//! What the Envoys report: each Envoy's last health map (breakers, request
//! counts, budget spending), kept apart by the node id it sends. The admin API
//! shows them merged; each Envoy gets back what the others counted for client
//! tokens, so a token's rate limit holds across Envoys sharing this control
//! plane.

use std::collections::{BTreeMap, HashMap};

use router_core::health::{HealthMap, State, Window};

/// A report older than this is from an Envoy that stopped.
const STALE_MS: u64 = 120_000;

#[derive(Debug, Default)]
pub struct Reports {
    nodes: HashMap<String, (HealthMap, u64)>,
}

impl Reports {
    /// Keep `map` as `node`'s state at `now_ms`.
    pub fn put(&mut self, node: &str, map: HealthMap, now_ms: u64) {
        self.nodes.retain(|_, (_, at)| now_ms.saturating_sub(*at) < STALE_MS);
        self.nodes.insert(node.to_string(), (map, now_ms));
    }

    /// Every live Envoy's state as one: any Envoy's open breaker, the sum of
    /// their counts and spending; and when the last report came.
    pub fn merged(&self, now_ms: u64) -> (HealthMap, u64) {
        let mut out = HealthMap::default();
        let mut last = 0;
        for (map, at) in self.nodes.values().filter(|(_, at)| now_ms.saturating_sub(*at) < STALE_MS) {
            last = last.max(*at);
            for (key, h) in &map.entries {
                let keep = out.entries.get(key).is_none_or(|o| {
                    (h.state != State::Closed && o.state == State::Closed)
                        || (o.state == h.state && h.since_ms > o.since_ms)
                });
                if keep {
                    out.entries.insert(key.clone(), *h);
                }
            }
            for (key, w) in &map.windows {
                add(&mut out.windows, key, w);
            }
            for (id, s) in &map.spend {
                let m = out.spend.entry(id.clone()).or_default();
                if s.as_of_ms > m.as_of_ms {
                    m.as_of_ms = s.as_of_ms;
                    m.settled_pico = 0;
                }
                if s.as_of_ms == m.as_of_ms {
                    m.settled_pico += s.settled_pico;
                }
                m.reserved_pico += s.reserved_pico;
            }
        }
        (out, last)
    }

    /// What Envoys other than `node` counted in client tokens' windows still
    /// open at `now_ms` (`window_ms` says how long a token's windows last).
    pub fn others(&self, node: &str, now_ms: u64, window_ms: impl Fn(&str) -> Option<u64>) -> HealthMap {
        let open = |key: &str, w: &Window| {
            let id = key.strip_prefix('@').map(|k| k.strip_suffix(" tokens").unwrap_or(k));
            id.and_then(&window_ms).is_some_and(|len| now_ms < w.start_ms.saturating_add(len))
        };
        let fresh = |at: u64| now_ms.saturating_sub(at) < STALE_MS;
        let mut out = HealthMap::default();
        for (n, (map, at)) in &self.nodes {
            if n == node || !fresh(*at) {
                continue;
            }
            for (key, w) in map.windows.iter().filter(|(k, w)| open(k, w)) {
                add(&mut out.windows, key, w);
            }
        }
        out
    }
}

/// Fold `w` into the sum under `key`: counts add up, the earliest start stays.
fn add(sums: &mut BTreeMap<String, Window>, key: &str, w: &Window) {
    match sums.get_mut(key) {
        None => {
            sums.insert(key.to_string(), *w);
        }
        Some(m) => {
            m.start_ms = m.start_ms.min(w.start_ms);
            m.count = m.count.saturating_add(w.count);
            if m.day_start_ms == w.day_start_ms {
                m.day_count = m.day_count.saturating_add(w.day_count);
            } else if w.day_start_ms > m.day_start_ms {
                m.day_start_ms = w.day_start_ms;
                m.day_count = w.day_count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_window(key: &str, start_ms: u64, count: u32) -> HealthMap {
        let mut m = HealthMap::default();
        m.windows.insert(key.into(), Window { start_ms, count, ..Window::default() });
        m
    }

    #[test]
    fn each_envoy_hears_what_the_others_counted_in_open_windows() {
        let mut r = Reports::default();
        r.put("a", with_window("@t", 1_000, 3), 1_000);
        r.put("b", with_window("@t", 1_500, 2), 1_500);
        r.put("c", with_window("@t", 0, 9), 1_500);
        let len = |id: &str| (id == "t").then_some(1_000);
        // c's window ended at 1,000; a hears b's 2, b hears a's 3.
        assert_eq!(r.others("a", 1_600, len).windows["@t"].count, 2);
        assert_eq!(r.others("b", 1_600, len).windows["@t"].count, 3);
        // The admin view sums every Envoy's counts.
        assert_eq!(r.merged(1_600).0.windows["@t"].count, 14);
        // An Envoy that stopped reporting drops out.
        r.put("b", with_window("@t", 200_000, 1), 200_000);
        assert!(r.others("b", 200_000, len).windows.is_empty());
    }
}
