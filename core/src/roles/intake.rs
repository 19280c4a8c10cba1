//! Taking in the channel table: following the control plane's answers (a new
//! table, no change, an error, silence) and compiling tables for this Envoy's
//! clusters. The wasm service role and the dynamic module's background thread
//! both poll; they differ only in how they make the HTTP call.

use std::collections::HashSet;

use crate::table::{Table, TableError};

/// What one poll of `GET /v1/table` came back with.
#[derive(Debug)]
pub enum Answer<'a> {
    /// 304: the table is unchanged.
    NotModified,
    /// 200 and the table's JSON.
    Table(&'a [u8]),
    /// Any other status, with the control plane's `x-error` if it sent one.
    Status(u16, Option<String>),
    /// No answer at all.
    Unreachable(String),
}

/// The poller's view: the version it has (for `If-None-Match`) and the problem
/// it last logged, so a lasting problem is logged once, not once per poll.
#[derive(Debug, Default)]
pub struct TableFollower {
    version: String,
    last_problem: Option<String>,
}

impl TableFollower {
    /// The version of the last table taken in (empty before the first).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Take in one answer; a new table that compiles is returned. A table that
    /// does not compile, an error or silence keeps the last good one.
    pub fn on_answer(&mut self, answer: Answer, known_clusters: Option<&HashSet<String>>) -> Option<Table> {
        match answer {
            Answer::NotModified => {
                self.ok();
                None
            }
            Answer::Table(bytes) => match compile(bytes, known_clusters) {
                Ok(table) => {
                    log::info!("smart-router: table {} loaded ({} channels)", table.version, table.channels.len());
                    self.version.clone_from(&table.version);
                    self.ok();
                    Some(table)
                }
                Err(e) => {
                    self.problem(format!(
                        "control plane sent a table that does not compile, keeping {}: {e}",
                        self.shown()
                    ));
                    None
                }
            },
            Answer::Status(status, detail) => {
                let detail = detail.map(|d| format!(" ({})", crate::error::ascii_safe(&d, 200))).unwrap_or_default();
                self.problem(format!("control plane answered {status}{detail}; keeping table {}", self.shown()));
                None
            }
            Answer::Unreachable(why) => {
                self.problem(format!("control plane unreachable ({why}); keeping table {}", self.shown()));
                None
            }
        }
    }

    /// Fetch the whole table again on the next poll (the last one could not be
    /// stored).
    pub fn forget_version(&mut self) {
        self.version.clear();
    }

    fn shown(&self) -> String {
        if self.version.is_empty() {
            "(none yet)".into()
        } else {
            self.version.clone()
        }
    }

    fn ok(&mut self) {
        if self.last_problem.take().is_some() {
            log::info!("smart-router: control plane reachable again");
        }
    }

    fn problem(&mut self, message: String) {
        if self.last_problem.as_deref() != Some(message.as_str()) {
            log::warn!("smart-router: {message}");
            self.last_problem = Some(message);
        }
    }
}

/// Compile a table for this Envoy: channels whose cluster it does not have are
/// left out of plans, and said so.
pub fn compile(bytes: &[u8], known_clusters: Option<&HashSet<String>>) -> Result<Table, TableError> {
    let table = Table::from_json(bytes, known_clusters)?;
    if !table.skipped_channels.is_empty() {
        log::warn!(
            "smart-router: channels {:?} have no Envoy cluster yet (restart Envoy with a re-rendered config to route to them)",
            table.skipped_channels
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{channel, doc};

    #[test]
    fn follows_answers_and_keeps_the_last_good_table() {
        let json = serde_json::to_vec(&doc(vec![channel("a", 1, &["m"])])).unwrap();
        let mut f = TableFollower::default();
        assert!(f.on_answer(Answer::Unreachable("refused".into()), None).is_none());
        let t = f.on_answer(Answer::Table(&json), None).unwrap();
        assert_eq!((t.version.as_str(), f.version()), ("v1", "v1"));
        assert!(f.on_answer(Answer::Table(b"{oops"), None).is_none());
        assert!(f.on_answer(Answer::Status(401, Some("wrong token".into())), None).is_none());
        assert!(f.on_answer(Answer::NotModified, None).is_none());
        assert_eq!(f.version(), "v1", "the good table's version stays");
        let known: HashSet<String> = HashSet::new();
        assert_eq!(compile(&json, Some(&known)).unwrap().skipped_channels, ["a"]);
    }
}
