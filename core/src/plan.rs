//! From the `model` a client asked for to an ordered plan of attempts.

use crate::error::RouterError;
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
    let budget = 1 + table.routing.max_retry_attempts as usize;
    // Look a little past the budget so unhealthy channels can be moved back.
    let found = resolve_query(table, requested, Mode::route(budget * 2))?;
    let mut attempts: Vec<Attempt> = found
        .candidates
        .into_iter()
        .map(|c| Attempt { channel: c.channel, upstream_model: c.upstream_model })
        .collect();
    attempts.sort_by_key(|a| !table.channel(a.channel).is_some_and(|c| c.healthy));
    attempts.truncate(budget);
    Ok(Plan { attempts })
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
