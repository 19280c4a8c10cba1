//! Scoring and strategies: candidates ordered the way a cost-conscious
//! user would order them by hand.
//!
//! Every field becomes a "goodness" in 0..=1 (higher is better); a strategy is a
//! list of weighted fields; a candidate's score is the weighted mean. Unknown facts
//! get a neutral prior, never zero, so a channel without data is not buried.
//! Candidates whose scores tie within [`TIE`] share traffic by weight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Scores this close count as equal and share traffic by weight.
pub const TIE: f64 = 0.005;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Cost,
    Speed,
    Quality,
    Reliability,
    Parameters,
    Context,
    QuotaRemaining,
    Priority,
    Free,
    Local,
}

impl Field {
    /// The name in configs and in `explain`'s score parts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cost => "cost",
            Self::Speed => "speed",
            Self::Quality => "quality",
            Self::Reliability => "reliability",
            Self::Parameters => "parameters",
            Self::Context => "context",
            Self::QuotaRemaining => "quota_remaining",
            Self::Priority => "priority",
            Self::Free => "free",
            Self::Local => "local",
        }
    }

    /// Config names, including the `*_score` spellings older configs use.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim_end_matches("_score") {
            "cost" | "effective_cost" => Self::Cost,
            "speed" => Self::Speed,
            "quality" => Self::Quality,
            "reliability" => Self::Reliability,
            "parameter" | "parameters" => Self::Parameters,
            "context" => Self::Context,
            "quota_remaining" => Self::QuotaRemaining,
            "priority" => Self::Priority,
            "free" => Self::Free,
            "local" => Self::Local,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub field: Field,
    pub weight: f64,
    /// `false` ranks the field's worst first (a user's `order: asc` on a field
    /// where higher is better, such as `speed`).
    #[serde(default = "yes")]
    pub best_first: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    pub name: String,
    pub layers: Vec<Layer>,
}

fn layers(spec: &[(Field, f64)]) -> Vec<Layer> {
    spec.iter().map(|&(field, weight)| Layer { field, weight, best_first: true }).collect()
}

pub const BUILTIN: &[&str] =
    &["cost_first", "free_first", "local_first", "speed_optimized", "quality_optimized", "balanced"];

/// The built-in strategies. Weights (`cost_first`: cost 40%,
/// parameters 25%, context 20%, speed 15%; `balanced`: cost 30%, speed 30%,
/// quality 20%, reliability 20%); `free_first` and `local_first` put a dominant
/// layer in front of `cost_first`.
pub fn builtin(name: &str) -> Option<Strategy> {
    builtin_ref(name).cloned()
}

/// [`builtin`] without building it: every request asks for its strategy.
pub fn builtin_ref(name: &str) -> Option<&'static Strategy> {
    static ALL: std::sync::OnceLock<Vec<Strategy>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| BUILTIN.iter().filter_map(|n| build_builtin(n)).collect()).iter().find(|s| s.name == name)
}

/// A strategy with no layers: every candidate scores 0.5 (ties share traffic).
pub fn unweighted() -> &'static Strategy {
    static NONE: std::sync::OnceLock<Strategy> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Strategy { name: "unweighted".into(), layers: vec![] })
}

fn build_builtin(name: &str) -> Option<Strategy> {
    use Field::*;
    let cost_first = [(Cost, 0.4), (Parameters, 0.25), (Context, 0.2), (Speed, 0.15)];
    let spec: Vec<(Field, f64)> = match name {
        "cost_first" => cost_first.to_vec(),
        "free_first" => [(Free, 10.0)].iter().chain(cost_first.iter()).copied().collect(),
        "local_first" => [(Local, 10.0)].iter().chain(cost_first.iter()).copied().collect(),
        "speed_optimized" => vec![(Speed, 0.6), (Reliability, 0.25), (Cost, 0.15)],
        "quality_optimized" => vec![(Quality, 0.6), (Reliability, 0.2), (Context, 0.2)],
        "balanced" => vec![(Cost, 0.3), (Speed, 0.3), (Quality, 0.2), (Reliability, 0.2)],
        _ => return None,
    };
    Some(Strategy { name: name.to_string(), layers: layers(&spec) })
}

/// What scoring knows about one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Facts {
    /// USD per 1M tokens, input and output, after the channel's multiplier.
    pub price_in: Option<f64>,
    pub price_out: Option<f64>,
    pub free: bool,
    pub local: bool,
    pub params_b: Option<f64>,
    pub context: Option<u64>,
    /// Quality set by configuration (0..=1), else derived from size and family.
    pub quality: Option<f64>,
    /// Measured time to first byte (ms, moving average) and success rate (0..=1).
    pub ttfb_ms: Option<f64>,
    pub success: Option<f64>,
    pub priority: i32,
    pub weight: u32,
    /// The share of its tightest limit (requests or tokens, per window or day)
    /// a channel or key has left; `None`: no limits.
    pub quota: Option<f64>,
}

impl AsMut<Facts> for Facts {
    fn as_mut(&mut self) -> &mut Facts {
        self
    }
}

/// Each field's goodness, in the order of [`Field`]'s use in a strategy.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Scored {
    pub total: f64,
    /// Each layer's goodness by field name (for `explain`).
    pub parts: BTreeMap<&'static str, f64>,
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.5
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Cost per 1M tokens, blending input and output as a chat typically uses them
/// (prompts longer than answers: 3 parts input, 1 part output).
pub fn blended_price(f: &Facts) -> Option<f64> {
    blend(f.free || f.local, f.price_in, f.price_out)
}

/// As [`blended_price`], from the parts: free (or local) costs nothing.
pub fn blend(free: bool, price_in: Option<f64>, price_out: Option<f64>) -> Option<f64> {
    if free {
        return Some(0.0);
    }
    match (price_in, price_out) {
        (Some(i), Some(o)) => Some((3.0 * i + o) / 4.0),
        (Some(p), None) | (None, Some(p)) => Some(p),
        (None, None) => None,
    }
}

/// Size on a log scale: 1B -> 0.0, 1T -> 1.0.
fn size_goodness(params_b: Option<f64>) -> f64 {
    params_b.map(|p| clamp01(p.max(0.01).log10() / 3.0)).unwrap_or(0.5)
}

pub fn goodness(field: Field, f: &Facts) -> f64 {
    match field {
        // $0 -> 1.0, $1/M -> 0.5, $10/M -> 0.09; unknown price is neutral.
        Field::Cost => blended_price(f).map(|p| 1.0 / (1.0 + p.max(0.0))).unwrap_or(0.5),
        // 0 ms -> 1.0, 1 s -> 0.5; no measurement yet is neutral.
        Field::Speed => f.ttfb_ms.map(|ms| 1.0 / (1.0 + ms.max(0.0) / 1000.0)).unwrap_or(0.5),
        Field::Reliability => f.success.map(clamp01).unwrap_or(0.8),
        Field::Quality => f.quality.map(clamp01).unwrap_or_else(|| size_goodness(f.params_b)),
        Field::Parameters => size_goodness(f.params_b),
        // 2K -> 0.0, 2M -> 1.0 on a log scale.
        Field::Context => f.context.map(|c| clamp01(((c.max(1) as f64) / 2048.0).log2() / 10.0)).unwrap_or(0.5),
        // A channel without limits has all its room.
        Field::QuotaRemaining => f.quota.map(clamp01).unwrap_or(1.0),
        Field::Priority => clamp01(1.0 - f64::from(f.priority.clamp(0, 100)) / 100.0),
        Field::Free => {
            if f.free || f.local {
                1.0
            } else {
                0.0
            }
        }
        Field::Local => {
            if f.local {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// A candidate never measured is assumed to be like the measured ones among the
/// same candidates (their mean), not better or worse: a new channel neither jumps
/// ahead of proven ones nor is buried behind them (neutral prior).
pub fn fill_priors<T: AsMut<Facts>>(items: &mut [T]) {
    // Sums, not collected lists: this runs on every request.
    let (mut ttfb, mut success) = ((0.0, 0usize), (0.0, 0usize));
    for f in items.iter_mut().map(AsMut::as_mut) {
        if let Some(x) = f.ttfb_ms {
            ttfb = (ttfb.0 + x, ttfb.1 + 1);
        }
        if let Some(x) = f.success {
            success = (success.0 + x, success.1 + 1);
        }
    }
    let mean = |(sum, n): (f64, usize)| (n > 0).then(|| sum / n as f64);
    let (ttfb, success) = (mean(ttfb), mean(success));
    for f in items.iter_mut().map(AsMut::as_mut) {
        f.ttfb_ms = f.ttfb_ms.or(ttfb);
        f.success = f.success.or(success);
    }
}

pub fn score(strategy: &Strategy, f: &Facts) -> Scored {
    score_with(strategy, f, true)
}

/// [`score`]; the per-layer parts only when `with_parts` (explain shows them,
/// routing needs only the total).
pub fn score_with(strategy: &Strategy, f: &Facts, with_parts: bool) -> Scored {
    let mut parts = BTreeMap::new();
    let (mut sum, mut weights) = (0.0, 0.0);
    for layer in &strategy.layers {
        let g = goodness(layer.field, f);
        let g = if layer.best_first { g } else { 1.0 - g };
        sum += layer.weight * g;
        weights += layer.weight;
        if with_parts {
            parts.insert(layer.field.name(), (g * 1000.0).round() / 1000.0);
        }
    }
    let total = if weights > 0.0 { sum / weights } else { 0.5 };
    Scored { total: (total * 10_000.0).round() / 10_000.0, parts }
}

/// One candidate as ordering sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub score: f64,
    /// The channel's configured priority (lower first): breaks score ties.
    pub priority: i32,
    pub weight: u32,
}

/// Order candidate indexes best first: by score, then by channel priority. The
/// candidates tied with the best (score within [`TIE`], same priority) share
/// traffic: `rotation` (a request counter) picks which leads, in proportion to
/// weight. Pure: the same inputs give the same order.
pub fn order(ranked: &[Ranked], rotation: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..ranked.len()).collect();
    // Scores closer than TIE are equal for ordering; stable sort keeps preference.
    let bucket = |r: &Ranked| (r.score / TIE).round() as i64;
    idx.sort_by(|&a, &b| bucket(&ranked[b]).cmp(&bucket(&ranked[a])).then(ranked[a].priority.cmp(&ranked[b].priority)));
    let Some(&best) = idx.first() else { return idx };
    let tied_len = idx
        .iter()
        .take_while(|&&i| ranked[best].score - ranked[i].score <= TIE && ranked[i].priority == ranked[best].priority)
        .count();
    let tied = &idx[..tied_len];
    if tied.len() > 1 {
        let total: u64 = tied.iter().map(|&i| u64::from(ranked[i].weight.max(1))).sum();
        let mut pick = rotation % total.max(1);
        let mut chosen = 0;
        for (pos, &i) in tied.iter().enumerate() {
            let w = u64::from(ranked[i].weight.max(1));
            if pick < w {
                chosen = pos;
                break;
            }
            pick -= w;
        }
        // Rotate the tied block so the chosen one leads and the others follow.
        idx[..tied_len].rotate_left(chosen);
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts { priority: 10, weight: 1, ..Default::default() }
    }

    fn best(strategy: &str, candidates: &[Facts]) -> usize {
        let s = builtin(strategy).unwrap();
        let ranked: Vec<Ranked> = candidates
            .iter()
            .map(|f| Ranked { score: score(&s, f).total, priority: f.priority, weight: f.weight })
            .collect();
        order(&ranked, 0)[0]
    }

    #[test]
    fn cost_first_prefers_the_cheapest() {
        let cheap = Facts { price_in: Some(0.15), price_out: Some(0.6), ..facts() };
        let dear = Facts { price_in: Some(2.5), price_out: Some(10.0), ..facts() };
        assert_eq!(best("cost_first", &[dear, cheap]), 1);
    }

    #[test]
    fn free_first_puts_free_before_paid_even_when_paid_is_better() {
        let free_small = Facts { free: true, params_b: Some(8.0), ..facts() };
        let paid_big = Facts { price_in: Some(0.01), price_out: Some(0.01), params_b: Some(400.0), ..facts() };
        assert_eq!(best("free_first", &[paid_big, free_small]), 1);
    }

    #[test]
    fn local_first_puts_local_before_cloud() {
        let cloud_free = Facts { free: true, ..facts() };
        let local = Facts { local: true, ..facts() };
        assert_eq!(best("local_first", &[cloud_free, local]), 1);
    }

    #[test]
    fn quality_optimized_prefers_the_larger_model() {
        let small = Facts { params_b: Some(8.0), ..facts() };
        let mid = Facts { params_b: Some(30.0), ..facts() };
        let large = Facts { params_b: Some(235.0), ..facts() };
        assert_eq!(best("quality_optimized", &[small, large, mid]), 1);
    }

    #[test]
    fn speed_optimized_prefers_measured_fast_and_gives_unknown_a_neutral_prior() {
        let slow = Facts { ttfb_ms: Some(2_000.0), success: Some(1.0), ..facts() };
        let fast = Facts { ttfb_ms: Some(100.0), success: Some(1.0), ..facts() };
        let unknown = facts();
        assert_eq!(best("speed_optimized", &[slow, fast]), 1);
        // A channel never measured beats one measured slow.
        assert_eq!(best("speed_optimized", &[slow, unknown]), 1);
    }

    fn r(score: f64, priority: i32, weight: u32) -> Ranked {
        Ranked { score, priority, weight }
    }

    #[test]
    fn unmeasured_candidates_are_assumed_average() {
        let mut fs = [Facts { ttfb_ms: Some(100.0), ..facts() }, facts(), Facts { ttfb_ms: Some(300.0), ..facts() }];
        fill_priors(&mut fs);
        assert_eq!(fs[1].ttfb_ms, Some(200.0));
        let mut none = [facts(), facts()];
        fill_priors(&mut none);
        assert_eq!(none[0].ttfb_ms, None);
    }

    #[test]
    fn ties_are_spread_by_weight() {
        let ranked = [r(0.7, 10, 3), r(0.7, 10, 1), r(0.5, 10, 10)];
        let mut first = [0usize; 3];
        for rot in 0..400 {
            first[order(&ranked, rot)[0]] += 1;
        }
        assert_eq!(first, [300, 100, 0]);
        assert_eq!(order(&ranked, 3), [1, 0, 2]);
    }

    #[test]
    fn priority_breaks_ties_and_is_not_shared() {
        let ranked = [r(0.7, 2, 5), r(0.7001, 1, 1), r(0.9, 3, 1)];
        for rot in 0..10 {
            assert_eq!(order(&ranked, rot), [2, 1, 0]);
        }
    }

    #[test]
    fn custom_fields_parse_with_seed_names() {
        assert_eq!(Field::parse("cost_score"), Some(Field::Cost));
        assert_eq!(Field::parse("effective_cost"), Some(Field::Cost));
        assert_eq!(Field::parse("parameter_score"), Some(Field::Parameters));
        assert_eq!(Field::parse("nope"), None);
    }
}

/// Measured speed and reliability of one channel+model, as moving averages
/// over all Envoy workers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perf {
    /// Unknown until an attempt succeeds.
    pub ttfb_ms: Option<f64>,
    pub success: f64,
    pub samples: u64,
    pub updated_ms: u64,
}

/// Perf by `channel model` key (as [`crate::health::model_key`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerfMap {
    pub entries: BTreeMap<String, Perf>,
}

/// Weight of one new sample in the moving averages.
const ALPHA: f64 = 0.2;

/// Measurements older than this are forgotten: a channel that lost traffic to a
/// faster one gets a neutral prior again, and with it a chance to show it recovered.
pub const PERF_TTL_MS: u64 = 300_000;

/// Attempt outcomes not yet folded into a [`PerfMap`]: requests only add here, and
/// the shim folds the batch in about once a second.
#[derive(Debug, Clone, Default)]
pub struct PerfBatch {
    /// key -> (attempts, answered, timed, summed time to first byte in ms)
    counts: hashbrown::HashMap<String, (u64, u64, u64, f64)>,
}

impl PerfBatch {
    /// One attempt's outcome; `ttfb_ms` when it was timed and answered.
    pub fn add(&mut self, channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>) {
        let count = |e: &mut (u64, u64, u64, f64)| {
            e.0 += 1;
            if answered {
                e.1 += 1;
                if let Some(t) = ttfb_ms {
                    e.2 += 1;
                    e.3 += t.max(0.0);
                }
            }
        };
        // Look up before inserting: the key is allocated once per batch, not per add.
        let counted = crate::health::with_model_key(channel, model, |k| self.counts.get_mut(k).map(count).is_some());
        if !counted {
            let mut e = (0, 0, 0, 0.0);
            count(&mut e);
            self.counts.insert(crate::health::model_key(channel, model), e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Fold the batch into `map` and expire old measurements.
    pub fn fold_into(&self, map: &mut PerfMap, now_ms: u64) {
        for (key, &(n, ok, timed, sum)) in &self.counts {
            map.merge(key, n, ok, timed, sum, now_ms);
        }
        map.expire(now_ms);
    }
}

/// Whether an attempt's outcome says something about speed and reliability:
/// answers and server failures do; rate limits and key failures are the
/// breaker's business, client errors nobody's.
pub fn counts_for_speed(class: Option<crate::health::ErrorClass>) -> bool {
    matches!(class, None | Some(crate::health::ErrorClass::Server))
}

impl PerfMap {
    pub fn get(&self, channel: &str, model: &str) -> Option<&Perf> {
        if self.entries.is_empty() {
            return None;
        }
        crate::health::with_model_key(channel, model, |k| self.entries.get(k))
    }

    /// Fold a batch of `n` attempts (`ok` of them answered; `timed` of those timed,
    /// with `ttfb_sum_ms` their summed time to first byte) into the averages.
    pub fn merge(&mut self, key: &str, n: u64, ok: u64, timed: u64, ttfb_sum_ms: f64, now_ms: u64) {
        if n == 0 {
            return;
        }
        let keep = (1.0 - ALPHA).powf(n as f64);
        let rate = ok as f64 / n as f64;
        let mean_ttfb = if timed > 0 { Some(ttfb_sum_ms / timed as f64) } else { None };
        match self.entries.get_mut(key) {
            Some(p) => {
                p.success = p.success * keep + rate * (1.0 - keep);
                if let Some(t) = mean_ttfb {
                    let keep_t = (1.0 - ALPHA).powf(timed as f64);
                    p.ttfb_ms = Some(p.ttfb_ms.map_or(t, |old| old * keep_t + t * (1.0 - keep_t)));
                }
                p.samples = p.samples.saturating_add(n);
                p.updated_ms = now_ms;
            }
            None => {
                let p = Perf { ttfb_ms: mean_ttfb, success: rate, samples: n, updated_ms: now_ms };
                self.entries.insert(key.to_string(), p);
            }
        }
    }

    /// Forget measurements older than [`PERF_TTL_MS`].
    pub fn expire(&mut self, now_ms: u64) {
        self.entries.retain(|_, p| now_ms.saturating_sub(p.updated_ms) < PERF_TTL_MS);
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("sarp2\n");
        for (k, p) in &self.entries {
            let ttfb = p.ttfb_ms.map(|t| format!("{t:.1}")).unwrap_or_else(|| "-".into());
            s.push_str(&format!("{ttfb} {:.4} {} {} {k}\n", p.success, p.samples, p.updated_ms));
        }
        s
    }

    /// Unreadable input gives an empty map: perf is advisory.
    pub fn decode(text: &str) -> Self {
        let mut map = Self::default();
        let mut lines = text.lines();
        if lines.next() != Some("sarp2") {
            return map;
        }
        for line in lines {
            let mut parts = line.splitn(5, ' ');
            let (Some(t), Some(s), Some(n), Some(u), Some(k)) =
                (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let ttfb = if t == "-" { None } else { t.parse::<f64>().ok().filter(|x| x.is_finite()) };
            let (Ok(s), Ok(n), Ok(u)) = (s.parse::<f64>(), n.parse::<u64>(), u.parse::<u64>()) else { continue };
            if s.is_finite() {
                map.entries.insert(k.to_string(), Perf { ttfb_ms: ttfb, success: s, samples: n, updated_ms: u });
            }
        }
        map
    }
}

#[cfg(test)]
mod perf_tests {
    use super::*;

    #[test]
    fn moving_averages_follow_batches_round_trip_and_expire() {
        let mut m = PerfMap::default();
        m.merge("b m", 3, 0, 0, 0.0, 1);
        assert_eq!(m.get("b", "m").unwrap().ttfb_ms, None, "no answer, no speed");
        m.merge("a m", 1, 1, 1, 100.0, 1);
        assert_eq!(m.get("a", "m").unwrap().ttfb_ms, Some(100.0));
        m.merge("a m", 10, 10, 10, 10.0 * 1000.0, 2);
        let p = *m.get("a", "m").unwrap();
        assert!(p.ttfb_ms.unwrap() > 800.0 && p.ttfb_ms.unwrap() < 1000.0, "{p:?}");
        m.merge("a m", 10, 0, 0, 0.0, 3);
        assert!(m.get("a", "m").unwrap().success < 0.2);
        let back = PerfMap::decode(&m.encode());
        assert_eq!(back.entries.keys().collect::<Vec<_>>(), m.entries.keys().collect::<Vec<_>>());
        assert_eq!(back.get("b", "m").unwrap().ttfb_ms, None);
        assert!((back.get("a", "m").unwrap().success - m.get("a", "m").unwrap().success).abs() < 1e-3);
        assert_eq!(PerfMap::decode("junk").entries.len(), 0);
        m.expire(3 + PERF_TTL_MS);
        assert!(m.entries.is_empty());
    }

    #[test]
    fn a_perf_batch_folds_counts_and_times_into_the_averages() {
        let mut b = PerfBatch::default();
        assert!(b.is_empty());
        b.add("a", "m", true, Some(100.0));
        b.add("a", "m", true, None);
        b.add("a", "m", false, None);
        let mut map = PerfMap::default();
        b.fold_into(&mut map, 1_000);
        let p = map.get("a", "m").unwrap();
        assert_eq!(p.samples, 3);
        assert!((p.success - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(p.ttfb_ms, Some(100.0));
        assert!(counts_for_speed(None) && counts_for_speed(Some(crate::health::ErrorClass::Server)));
        assert!(!counts_for_speed(Some(crate::health::ErrorClass::RateLimited)));
    }
}
