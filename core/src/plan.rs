//! From the `model` a client asked for to an ordered plan of attempts.

use crate::error::{ascii_safe, RouterError};
use crate::health::{Admit, HealthMap};
use crate::resolve::{resolve as resolve_query, Mode};
use crate::table::Table;

/// One attempt: which channel, and the model name that channel receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub channel: u32,
    pub upstream_model: String,
}

/// Attempts in order. Envoy executes them: attempt N+1 happens only if attempt N
/// failed before any byte reached the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub attempts: Vec<Attempt>,
}

/// Resolve the requested name (see [`crate::resolve`]) and keep what the retry
/// budget allows, healthy channels first (a channel believed down is a last resort).
pub fn resolve(table: &Table, requested: &str) -> Result<Plan, RouterError> {
    resolve_with_health(table, requested, &HealthMap::default(), 0).map(|(plan, _)| plan)
}

/// As [`resolve`], leaving out candidates whose breaker is open or whose key
/// failed (SPEC F2, F3). Also returns the attempts that are half-open probes, which
/// the caller marks so other workers do not probe at the same time.
pub fn resolve_with_health(
    table: &Table,
    requested: &str,
    health: &HealthMap,
    now_ms: u64,
) -> Result<(Plan, Vec<usize>), RouterError> {
    let budget = 1 + table.routing.max_retry_attempts as usize;
    // Look past the budget so channels that are out can be replaced.
    let limit = if health.entries.is_empty() { budget * 2 } else { budget * 4 + 8 };
    let found = resolve_query(table, requested, Mode::route(limit))?;
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut probes = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for c in found.candidates {
        let Some(ch) = table.channel(c.channel) else { continue };
        match health.admit(&ch.id, &c.upstream_model, now_ms, ch.key_ok_ms) {
            Admit::Yes => {}
            Admit::Probe => probes.push(attempts.len()),
            Admit::No(reason, until) => {
                let when = if until == u64::MAX {
                    "until its key validates".to_string()
                } else {
                    format!("for {:.1} s", until.saturating_sub(now_ms) as f64 / 1000.0)
                };
                out.push(format!("{} ({}, {when})", ch.id, reason.describe()));
                continue;
            }
        }
        attempts.push(Attempt { channel: c.channel, upstream_model: c.upstream_model });
    }
    if attempts.is_empty() {
        return Err(RouterError::unavailable(
            "all_channels_unavailable",
            format!("every channel for model \"{}\" is out: {}", ascii_safe(requested, 200), out.join(", ")),
        ));
    }
    // Stable: preference order within each group.
    let mut order: Vec<usize> = (0..attempts.len()).collect();
    order.sort_by_key(|&i| !table.channel(attempts[i].channel).is_some_and(|c| c.healthy));
    order.truncate(budget);
    let probes = probes.into_iter().filter_map(|p| order.iter().position(|&i| i == p)).collect();
    let attempts = order.into_iter().map(|i| attempts[i].clone()).collect();
    Ok((Plan { attempts }, probes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{channel, doc};

    fn ids(t: &Table, p: &Plan) -> Vec<(String, String)> {
        p.attempts.iter().map(|a| (t.channel(a.channel).unwrap().id.clone(), a.upstream_model.clone())).collect()
    }

    #[test]
    fn physical_name_reaches_every_channel_serving_it() {
        let t =
            Table::compile(doc(vec![channel("a", 1, &["m"]), channel("b", 1, &["x"]), channel("c", 0, &["m"])]), None)
                .unwrap();
        let p = resolve(&t, "m").unwrap();
        assert_eq!(ids(&t, &p), [("c".into(), "m".into()), ("a".into(), "m".into())]);
    }

    #[test]
    fn alias_reaches_the_channels_own_name() {
        let mut c = channel("doubao", 1, &["ep-1"]);
        c.aliases.insert("doubao-pro".into(), "ep-1".into());
        let t = Table::compile(doc(vec![c, channel("b", 2, &["doubao-pro"])]), None).unwrap();
        let p = resolve(&t, "doubao-pro").unwrap();
        assert_eq!(ids(&t, &p), [("b".into(), "doubao-pro".into()), ("doubao".into(), "ep-1".into())]);
    }

    #[test]
    fn unknown_model_is_404_naming_it() {
        let t = Table::compile(doc(vec![channel("a", 1, &["m"])]), None).unwrap();
        let e = resolve(&t, "nope-model").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("nope-model"));
    }

    #[test]
    fn channels_out_of_health_are_left_out_and_named_when_all_are() {
        use crate::health::{classify, Policy};
        let t = Table::compile(doc(vec![channel("a", 1, &["m"]), channel("b", 2, &["m"])]), None).unwrap();
        let mut h = HealthMap::default();
        h.record("a", "m", 1_000, classify(429), Some(2_000), &Policy::default());
        let (p, probes) = resolve_with_health(&t, "m", &h, 1_500).unwrap();
        assert_eq!(ids(&t, &p), [("b".into(), "m".into())]);
        assert!(probes.is_empty());
        h.record("b", "m", 1_000, classify(401), None, &Policy::default());
        let e = resolve_with_health(&t, "m", &h, 1_500).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.message.contains("a (rate limited, for 1.5 s)"), "{}", e.message);
        assert!(e.message.contains("b (key invalid, until its key validates)"), "{}", e.message);
        // The rest is over: a is back.
        let (p, _) = resolve_with_health(&t, "m", &h, 3_000).unwrap();
        assert_eq!(ids(&t, &p), [("a".into(), "m".into())]);
    }

    #[test]
    fn plan_respects_retry_budget_and_health() {
        let mut d = doc((0..6).map(|i| channel(&format!("c{i}"), 1, &["m"])).collect());
        d.channels[0].healthy = false;
        d.routing.max_retry_attempts = 2;
        let t = Table::compile(d, None).unwrap();
        let p = resolve(&t, "m").unwrap();
        let got: Vec<String> = ids(&t, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["c1", "c2", "c3"]);
    }
}
