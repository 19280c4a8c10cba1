//! The router's counters in Envoy's stats, as both shims show them in
//! `/stats/prometheus`: `sar_channel_attempts{channel="a"}`,
//! `sar_model_requests{model="gpt-4o-mini"}`, ...
//!
//! Requests only add to a [`Stats`] batch (a map update, no call into Envoy);
//! each shim hands the batch to Envoy on a timer, in its own way (the wasm filter
//! defines `sar.channel.channel=<id>.attempts` and Envoy's stats tags cut the label
//! out; the module increments labelled counters). The labels are made here, once.

use std::borrow::Cow;
use std::collections::HashSet;

use hashbrown::HashMap;

/// Counters per channel (label `channel`), per model as the client named it
/// (label `model`), and for the router as a whole (no label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Attempts sent to the channel.
    ChannelAttempts,
    /// Attempts that failed (failed over, or ended the request).
    ChannelFailures,
    /// Times a breaker opened, a rest began or the key failed.
    ChannelEjections,
    /// Attempts the router could not prepare (its channel left the table mid-request).
    ChannelAttemptErrors,
    /// Requests per model.
    ModelRequests,
    /// Attempts after the first.
    ModelFailovers,
    /// Requests that failed on every channel.
    ModelFailures,
    /// Prompt and completion tokens the channel's answers used.
    ChannelPromptTokens,
    ChannelCompletionTokens,
    /// What the channel's answers cost, in micro-USD.
    ChannelCostMicroUsd,
    ModelPromptTokens,
    ModelCompletionTokens,
    ModelCostMicroUsd,
    /// Usage records Envoy could not keep for the control plane (its buffer
    /// was full): a loss, said here and in Envoy's log.
    UsageRecordsDropped,
}

impl Counter {
    pub const ALL: [Counter; 14] = [
        Counter::ChannelAttempts,
        Counter::ChannelFailures,
        Counter::ChannelEjections,
        Counter::ChannelAttemptErrors,
        Counter::ModelRequests,
        Counter::ModelFailovers,
        Counter::ModelFailures,
        Counter::ChannelPromptTokens,
        Counter::ChannelCompletionTokens,
        Counter::ChannelCostMicroUsd,
        Counter::ModelPromptTokens,
        Counter::ModelCompletionTokens,
        Counter::ModelCostMicroUsd,
        Counter::UsageRecordsDropped,
    ];

    /// The label's name, which is also the counter's group: `channel`, `model`,
    /// or `usage` for the unlabelled ones (whose label is [`Counter::has_label`] false).
    pub fn label(self) -> &'static str {
        match self {
            Counter::ChannelAttempts
            | Counter::ChannelFailures
            | Counter::ChannelEjections
            | Counter::ChannelAttemptErrors
            | Counter::ChannelPromptTokens
            | Counter::ChannelCompletionTokens
            | Counter::ChannelCostMicroUsd => "channel",
            Counter::ModelRequests
            | Counter::ModelFailovers
            | Counter::ModelFailures
            | Counter::ModelPromptTokens
            | Counter::ModelCompletionTokens
            | Counter::ModelCostMicroUsd => "model",
            Counter::UsageRecordsDropped => "usage",
        }
    }

    /// Whether the counter carries a label (its value is a channel or a model).
    pub fn has_label(self) -> bool {
        self.label() != "usage"
    }

    /// The counter's name within its group.
    pub fn name(self) -> &'static str {
        match self {
            Counter::ChannelAttempts => "attempts",
            Counter::ChannelFailures | Counter::ModelFailures => "failures",
            Counter::ChannelEjections => "ejections",
            Counter::ChannelAttemptErrors => "attempt_errors",
            Counter::ModelRequests => "requests",
            Counter::ModelFailovers => "failovers",
            Counter::ChannelPromptTokens | Counter::ModelPromptTokens => "prompt_tokens",
            Counter::ChannelCompletionTokens | Counter::ModelCompletionTokens => "completion_tokens",
            Counter::ChannelCostMicroUsd | Counter::ModelCostMicroUsd => "cost_micro_usd",
            Counter::UsageRecordsDropped => "records_dropped",
        }
    }

    /// `<label>_<name>`: the Prometheus name after `sar_`.
    pub fn metric(self) -> String {
        format!("{}_{}", self.label(), self.name())
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Distinct model labels one batch owner (a wasm VM, the module's process)
/// creates. The label is what the client wrote, and a client can write endless
/// spellings (`tag:free`, `TAG: free`, ...): past this, new ones count under
/// `other` so Envoy's stats cannot grow without bound.
pub const MAX_MODEL_LABELS: usize = 1000;

/// Longest label kept.
const MAX_LABEL: usize = 120;

/// A stat label made from a channel id or a model name: ASCII letters, digits,
/// `-` and `_`, everything else `_`, at most 120 characters. `.` separates the
/// parts of a wasm stat name and `=` marks its label, so neither may stay.
pub fn label(s: &str) -> Cow<'_, str> {
    let clean = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if s.len() <= MAX_LABEL && s.chars().all(clean) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().take(MAX_LABEL).map(|c| if clean(c) { c } else { '_' }).collect())
}

/// Histograms, by channel: a stream's time to its first byte, in milliseconds
/// (OpenTelemetry's GenAI `gen_ai.server.time_to_first_token`). A channel's
/// request durations are Envoy's own per-cluster `upstream_rq_time`, which
/// Envoy records for every attempt anyway; each sample here costs a labelled
/// stat lookup in Envoy, so none is duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Histogram {
    ChannelTimeToFirstTokenMs,
}

impl Histogram {
    pub const ALL: [Histogram; 1] = [Histogram::ChannelTimeToFirstTokenMs];

    pub fn label(self) -> &'static str {
        "channel"
    }

    pub fn name(self) -> &'static str {
        match self {
            Histogram::ChannelTimeToFirstTokenMs => "time_to_first_token_ms",
        }
    }

    pub fn metric(self) -> String {
        format!("{}_{}", self.label(), self.name())
    }
}

/// Samples kept between flushes at most (histograms are statistics: past this
/// a flush period's extra samples are left out).
const MAX_SAMPLES: usize = 8192;

/// Drained histogram samples: each histogram's values by label.
pub type Samples = Vec<(Histogram, String, Vec<u64>)>;

/// Counts not yet handed to Envoy.
#[derive(Debug, Default)]
pub struct Stats {
    // (A channel's and a model's counters never share a slot, so one map by
    // label holds both. Keys are cleaned labels, capped in number.)
    pending: HashMap<String, [u64; Counter::ALL.len()]>,
    model_labels: HashSet<String>,
    /// Histogram samples by histogram, then by label.
    samples: [HashMap<String, Vec<u64>>; Histogram::ALL.len()],
    sample_count: usize,
    /// Cost counters count micro-USD; the picodollars below a micro-USD wait
    /// here for the next ones, so the counters add up to the records.
    cost_remainders: HashMap<(Counter, String), u64>,
}

impl Stats {
    /// Add `by` to `counter` for `who` (a channel id, or a model name as the
    /// client wrote it).
    pub fn add(&mut self, counter: Counter, who: &str, by: u64) {
        if by > 0 {
            self.counts(counter.label(), who)[counter.slot()] += by;
        }
    }

    /// The pending counts of `who` in `group` (a [`Counter::label`]): one label
    /// and one lookup for all of a request's counters of that group.
    fn counts(&mut self, group: &'static str, who: &str) -> &mut [u64; Counter::ALL.len()] {
        let l = match group {
            "channel" => label(who),
            "model" => {
                let l = label(who);
                self.model_label(l)
            }
            _ => Cow::Borrowed(""),
        };
        // (The label's key is allocated once per flush.)
        self.pending.entry_ref(l.as_ref()).or_insert([0; Counter::ALL.len()])
    }

    fn model_label<'a>(&mut self, l: Cow<'a, str>) -> Cow<'a, str> {
        if self.model_labels.contains(l.as_ref()) {
            return l;
        }
        if self.model_labels.len() >= MAX_MODEL_LABELS {
            return Cow::Borrowed("other");
        }
        self.model_labels.insert(l.to_string());
        l
    }

    /// One finished request: the model as the client named it, the channels
    /// tried in order (the last one gave the final answer) and whether the
    /// client got a failure.
    pub fn request(&mut self, model: &str, channels_tried: &[&str], failed: bool) {
        let n = channels_tried.len();
        for (i, ch) in channels_tried.iter().enumerate() {
            let counts = self.counts("channel", ch);
            counts[Counter::ChannelAttempts.slot()] += 1;
            if i + 1 < n || failed {
                counts[Counter::ChannelFailures.slot()] += 1;
            }
        }
        let counts = self.counts("model", model);
        counts[Counter::ModelRequests.slot()] += 1;
        counts[Counter::ModelFailovers.slot()] += n.saturating_sub(1) as u64;
        counts[Counter::ModelFailures.slot()] += u64::from(failed);
    }

    /// What an answered request used and cost, for its channel and its model
    /// as the client named it. (Cost counters hold picodollars until the flush
    /// turns them into micro-USD.)
    pub fn usage(&mut self, channel: &str, model: &str, usage: &crate::usage::Usage, cost_pico: Option<u64>) {
        for (group, who, [prompt, completion, cost]) in [
            (
                "channel",
                channel,
                [Counter::ChannelPromptTokens, Counter::ChannelCompletionTokens, Counter::ChannelCostMicroUsd],
            ),
            ("model", model, [Counter::ModelPromptTokens, Counter::ModelCompletionTokens, Counter::ModelCostMicroUsd]),
        ] {
            let counts = self.counts(group, who);
            counts[prompt.slot()] += usage.prompt_tokens;
            counts[completion.slot()] += usage.completion_tokens;
            counts[cost.slot()] += cost_pico.unwrap_or(0);
        }
    }

    /// One histogram sample for `channel`.
    pub fn sample(&mut self, h: Histogram, channel: &str, value: u64) {
        if self.sample_count < MAX_SAMPLES {
            self.sample_count += 1;
            self.samples[h as usize].entry_ref(label(channel).as_ref()).or_default().push(value);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.sample_count == 0
    }

    /// Everything counted since the last call: (counter, label, amount).
    pub fn drain(&mut self) -> Vec<(Counter, String, u64)> {
        let mut out = Vec::new();
        for (label, counts) in self.pending.drain() {
            for c in Counter::ALL {
                let mut by = counts[c.slot()];
                if matches!(c, Counter::ChannelCostMicroUsd | Counter::ModelCostMicroUsd) && by > 0 {
                    let rest = self.cost_remainders.entry((c, label.clone())).or_insert(0);
                    let pico = by + *rest;
                    by = pico / 1_000_000;
                    *rest = pico % 1_000_000;
                }
                if by > 0 {
                    out.push((c, label.clone(), by));
                }
            }
        }
        out
    }

    /// The histogram samples since the last call, by histogram and label.
    pub fn drain_samples(&mut self) -> Samples {
        self.sample_count = 0;
        let mut out = Vec::new();
        for h in Histogram::ALL {
            out.extend(self.samples[h as usize].drain().map(|(label, values)| (h, label, values)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_safe_names_and_replace_the_rest() {
        assert!(matches!(label("gpt-4o-mini"), Cow::Borrowed("gpt-4o-mini")));
        assert_eq!(label("vendor/model:free"), "vendor_model_free");
        assert_eq!(label("a.b=c"), "a_b_c");
        assert_eq!(label("qwen3-\u{4e2d}\u{6587}"), "qwen3-__");
        assert_eq!(label(&"x".repeat(500)).len(), 120);
    }

    #[test]
    fn a_request_counts_attempts_failures_and_failovers() {
        let mut s = Stats::default();
        s.request("m/x", &["a", "b"], false);
        s.request("m/x", &["a"], true);
        s.add(Counter::ChannelEjections, "a", 1);
        let mut got = s.drain();
        got.sort_by(|x, y| (x.1.as_str(), x.0.metric()).cmp(&(y.1.as_str(), y.0.metric())));
        let got: Vec<(String, &str, u64)> = got.iter().map(|(c, l, n)| (c.metric(), l.as_str(), *n)).collect();
        assert_eq!(
            got,
            [
                ("channel_attempts".to_string(), "a", 2),
                ("channel_ejections".to_string(), "a", 1),
                ("channel_failures".to_string(), "a", 2),
                ("channel_attempts".to_string(), "b", 1),
                ("model_failovers".to_string(), "m_x", 1),
                ("model_failures".to_string(), "m_x", 1),
                ("model_requests".to_string(), "m_x", 2),
            ]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn model_labels_are_capped() {
        let mut s = Stats::default();
        for i in 0..MAX_MODEL_LABELS + 10 {
            s.add(Counter::ModelRequests, &format!("m{i}"), 1);
        }
        let drained = s.drain();
        assert_eq!(drained.len(), MAX_MODEL_LABELS + 1);
        assert!(drained.iter().any(|(_, l, n)| l == "other" && *n == 10));
    }
}
