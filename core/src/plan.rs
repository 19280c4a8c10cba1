//! From the `model` a client asked for to an ordered plan of attempts.

use crate::error::{ascii_safe, RouterError};
use crate::table::{Candidate, Table};

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

/// Resolve a requested name: every channel serving it as a physical model (M1), then
/// every channel that maps it through an alias (M7), each channel once, in the table's
/// preference order, cut to the retry budget.
pub fn resolve(table: &Table, requested: &str) -> Result<Plan, RouterError> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut push = |c: &Candidate| {
        if !attempts.iter().any(|a| a.channel == c.channel) {
            attempts.push(Attempt {
                channel: c.channel,
                upstream_model: c.upstream_model.clone(),
            });
        }
    };
    table
        .candidates_for_model(requested)
        .iter()
        .for_each(&mut push);
    table
        .candidates_for_alias(requested)
        .iter()
        .for_each(&mut push);
    if attempts.is_empty() {
        return Err(RouterError::model_not_found(format!(
            "model \"{}\" is not served by any channel (see GET /v1/models)",
            ascii_safe(requested, 200)
        )));
    }
    // Healthy channels first; a channel believed down is still a last resort.
    attempts.sort_by_key(|a| !table.channel(a.channel).is_some_and(|c| c.healthy));
    let budget = 1 + table.routing.max_retry_attempts as usize;
    attempts.truncate(budget);
    Ok(Plan { attempts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{channel, doc};

    fn ids(t: &Table, p: &Plan) -> Vec<(String, String)> {
        p.attempts
            .iter()
            .map(|a| {
                (
                    t.channel(a.channel).unwrap().id.clone(),
                    a.upstream_model.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn physical_name_reaches_every_channel_serving_it() {
        let t = Table::compile(
            doc(vec![
                channel("a", 1, &["m"]),
                channel("b", 1, &["x"]),
                channel("c", 0, &["m"]),
            ]),
            None,
        )
        .unwrap();
        let p = resolve(&t, "m").unwrap();
        assert_eq!(
            ids(&t, &p),
            [("c".into(), "m".into()), ("a".into(), "m".into())]
        );
    }

    #[test]
    fn alias_reaches_the_channels_own_name() {
        let mut c = channel("doubao", 1, &["ep-1"]);
        c.aliases.insert("doubao-pro".into(), "ep-1".into());
        let t = Table::compile(doc(vec![c, channel("b", 2, &["doubao-pro"])]), None).unwrap();
        let p = resolve(&t, "doubao-pro").unwrap();
        assert_eq!(
            ids(&t, &p),
            [
                ("b".into(), "doubao-pro".into()),
                ("doubao".into(), "ep-1".into())
            ]
        );
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
        let mut d = doc((0..6)
            .map(|i| channel(&format!("c{i}"), 1, &["m"]))
            .collect());
        d.channels[0].healthy = false;
        d.routing.max_retry_attempts = 2;
        let t = Table::compile(d, None).unwrap();
        let p = resolve(&t, "m").unwrap();
        let got: Vec<String> = ids(&t, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["c1", "c2", "c3"]);
    }
}
