//! From the `model` a client asked for to an ordered plan of attempts.

use std::borrow::Cow;

use crate::error::{ascii_safe, RouterError};
use crate::health::{Admit, HealthMap, LimitedUntil};
use crate::resolve::{resolve as resolve_query, Mode, Stage};
use crate::score::{self, Facts, PerfMap, Ranked, Scored, Strategy};
use crate::table::{Candidate, ClientToken, Table};

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

/// What the plan is built from besides the table: live health and performance
/// (shared by all workers), the time, and a request counter for spreading ties.
#[derive(Clone, Copy)]
pub struct Live<'a> {
    pub health: &'a HealthMap,
    pub perf: &'a PerfMap,
    pub now_ms: u64,
    pub rotation: u64,
    /// The client token, when tokens are required: a plan holds only what it may use.
    pub token: Option<&'a ClientToken>,
    /// What the request may cost, for budgets.
    pub size: RequestSize,
}

/// The tokens a request is expected to use at most: its prompt (estimated from
/// its size) and the answer it allows (`max_tokens`, else the table's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSize {
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// What the client itself asked the answer to hold at most (0: nothing said).
    pub asked_output: u64,
    /// The request offers tools (never a simple prompt).
    pub tools: bool,
}

impl RequestSize {
    /// About four bytes of JSON per token.
    pub fn of(body_len: usize, max_tokens: Option<u64>, default_output: u64) -> Self {
        Self {
            prompt_tokens: (body_len as u64).div_ceil(4),
            output_tokens: max_tokens.unwrap_or(default_output),
            asked_output: max_tokens.unwrap_or(0),
            tools: false,
        }
    }

    /// Whether a model with this context holds the request, as far as the
    /// estimate can tell (an unknown context may).
    fn fits(self, context: Option<u64>) -> bool {
        context.is_none_or(|c| self.prompt_tokens.saturating_add(self.asked_output) <= c)
    }

    fn usage(self) -> crate::usage::Usage {
        crate::usage::Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.output_tokens,
            ..Default::default()
        }
    }
}

/// What the plan holds against budgets: (index in `Table::budgets`, picodollars).
pub type Reservation = Vec<(usize, u64)>;

/// A plan with what the filter reports about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub plan: Plan,
    /// Attempts that are half-open probes (the caller marks them).
    pub probes: Vec<usize>,
    /// The strategy's name (a built-in's is borrowed: this is made per request).
    pub strategy: Cow<'static, str>,
    /// Each attempt's score.
    pub scores: Vec<f64>,
    /// The most any attempt may cost, held against each budget covering it.
    pub reserved: Reservation,
    /// Candidates left out, each with why (limits, health, budgets, context).
    pub left_out: Vec<String>,
}

/// How many candidates are scored: enough for any plan and its replacements.
const SCORED: usize = 64;

/// The active strategy: the group's own, else the table's default (a built-in or
/// custom one by name; `cost_first` if the name is unknown).
pub fn strategy<'t>(table: &'t Table, group: Option<&str>) -> &'t Strategy {
    if let Some(s) = group.and_then(|g| table.group(g)).and_then(|g| g.strategy.as_ref()) {
        return s;
    }
    let name = table.routing.default_strategy.as_str();
    score::builtin_ref(name)
        .or_else(|| table.routing.strategies.get(name))
        .or_else(|| score::builtin_ref("cost_first"))
        .unwrap_or_else(|| score::unweighted())
}

/// Everything scoring knows about a candidate; `health` at `now_ms` says how
/// much of its limits a channel has left.
pub fn facts(table: &Table, c: &Candidate, perf: &PerfMap, health: (&HealthMap, u64)) -> Facts {
    let ch = table.channel(c.channel);
    let quota = ch.and_then(|ch| Some(health.0.quota_remaining(&ch.scope, ch.limits.as_ref()?, health.1)));
    let e = table.entry_for(c);
    let measured = ch.and_then(|ch| perf.get(&ch.scope, &c.upstream_model));
    Facts {
        price_in: e.and_then(|e| e.price_in),
        price_out: e.and_then(|e| e.price_out),
        free: e.is_some_and(|e| e.free),
        local: e.is_some_and(|e| e.local),
        params_b: e.and_then(|e| e.params_b),
        context: e.and_then(|e| e.context_length),
        quality: e.and_then(|e| table.routing.quality.get(&e.core).copied().or(e.quality)),
        ttfb_ms: measured.and_then(|p| p.ttfb_ms),
        success: measured.map(|p| p.success),
        priority: ch.map(|c| c.priority).unwrap_or(0),
        weight: ch.map(|c| c.weight).unwrap_or(1),
        quota,
    }
}

/// A candidate with what scoring made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedCandidate {
    pub candidate: Candidate,
    pub facts: Facts,
    pub score: Scored,
}

/// Candidates in the order routing tries them (before health), the strategy that
/// ordered them, and those `routing.model_filters` left out. Routing and `explain`
/// both rank through here, so explain shows what routing does.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking<'t> {
    pub strategy: &'t Strategy,
    pub candidates: Vec<RankedCandidate>,
    pub filtered_out: Vec<Candidate>,
}

impl AsMut<Facts> for RankedCandidate {
    fn as_mut(&mut self) -> &mut Facts {
        &mut self.facts
    }
}

/// `explain` adds each score's parts (routing needs only the totals).
pub fn rank<'t>(
    table: &'t Table,
    requested: &str,
    found: crate::resolve::Resolution,
    perf: &PerfMap,
    health: (&HealthMap, u64),
    rotation: u64,
    explain: bool,
) -> Result<Ranking<'t>, RouterError> {
    rank_with(table, requested, found, perf, health, rotation, explain, None)
}

/// [`rank`] with `strategy` in place of the one the table or group sets.
#[allow(clippy::too_many_arguments)]
pub fn rank_with<'t>(
    table: &'t Table,
    requested: &str,
    found: crate::resolve::Resolution,
    perf: &PerfMap,
    health: (&HealthMap, u64),
    rotation: u64,
    explain: bool,
    strategy_override: Option<&'t Strategy>,
) -> Result<Ranking<'t>, RouterError> {
    let strategy = strategy_override.unwrap_or_else(|| strategy(table, found.group.as_deref()));
    let mut candidates = found.candidates;
    let mut filtered_out = Vec::new();
    // routing.model_filters narrow tag queries and groups; a named model is served.
    let searched = found.stages.iter().any(|s| matches!(s, Stage::Tags | Stage::NameAsTags | Stage::Group));
    if searched && table.routing.filters != crate::groups::GroupFilters::default() {
        let (keep, drop): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| table.entry_for(c).is_none_or(|e| crate::table::admits(&table.routing.filters, e)));
        if keep.is_empty() {
            return Err(RouterError::model_not_found(format!(
                "no model matching \"{}\" passes routing.model_filters",
                ascii_safe(requested, 200)
            )));
        }
        candidates = keep;
        filtered_out = drop;
    }
    let mut scored: Vec<RankedCandidate> = candidates
        .into_iter()
        .map(|candidate| {
            let facts = facts(table, &candidate, perf, health);
            RankedCandidate { candidate, facts, score: Scored::default() }
        })
        .collect();
    score::fill_priors(&mut scored);
    for r in &mut scored {
        r.score = score::score_with(strategy, &r.facts, explain);
    }
    // One candidate (a model only one channel serves) needs no ordering.
    if scored.len() > 1 {
        let ranks: Vec<Ranked> = scored
            .iter()
            .map(|r| Ranked { score: r.score.total, priority: r.facts.priority, weight: r.facts.weight })
            .collect();
        let mut slots: Vec<Option<RankedCandidate>> = scored.drain(..).map(Some).collect();
        scored.extend(score::order(&ranks, rotation).into_iter().filter_map(|i| slots.get_mut(i)?.take()));
    }
    Ok(Ranking { strategy, candidates: scored, filtered_out })
}

/// The candidate `requested` would go to first under `strategy`, with no live
/// data (for advice on what another strategy would have cost).
pub fn first_choice(table: &Table, requested: &str, strategy: &Strategy) -> Option<Candidate> {
    let found = resolve_query(table, requested, Mode::route(SCORED)).ok()?;
    let none = HealthMap::default();
    let ranked = rank_with(table, requested, found, &PerfMap::default(), (&none, 0), 0, false, Some(strategy)).ok()?;
    ranked.candidates.into_iter().next().map(|r| r.candidate)
}

/// Resolve the requested name (see [`crate::resolve`]) in preference order, with
/// no live data: what `explain` and tests use.
pub fn resolve(table: &Table, requested: &str) -> Result<Plan, RouterError> {
    let live = Live {
        health: &HealthMap::default(),
        perf: &PerfMap::default(),
        now_ms: 0,
        rotation: 0,
        token: None,
        size: RequestSize::default(),
    };
    plan(table, requested, live).map(|p| p.plan)
}

/// Keys of one channel a plan holds for one model: the first, and one spare
/// for what is the key's own (a revoked key, its rate limit). A channel that
/// fails for every key fails once more, not once per key.
const KEYS_PER_PLAN: usize = 2;

/// Put the keys of each channel with several in its places in the ranking in
/// the channel's order: from the first (`fill_first`, so limits and health move
/// on to the next), or from the next one each request (`round_robin`). Their
/// scores differ only by what was measured per key, which is not the key's doing.
fn order_keys(table: &Table, ranked: &mut [RankedCandidate], rotation: u64) {
    let mut placed = vec![false; ranked.len()];
    for i in 0..ranked.len() {
        let Some(ch) = table.channel(ranked[i].candidate.channel).filter(|c| c.key.is_some() && !placed[i]) else {
            continue;
        };
        let same = |r: &RankedCandidate| {
            r.candidate.upstream_model == ranked[i].candidate.upstream_model
                && table.channel(r.candidate.channel).is_some_and(|o| o.id == ch.id)
        };
        let slots: Vec<usize> = (i..ranked.len()).filter(|&j| same(&ranked[j])).collect();
        let mut group: Vec<RankedCandidate> = slots.iter().map(|&j| ranked[j].clone()).collect();
        group.sort_by_key(|r| table.channel(r.candidate.channel).map_or(0, |c| c.key_index));
        if !ch.fill_first && !group.is_empty() {
            let n = group.len() as u64;
            group.rotate_left((rotation % n) as usize);
        }
        for (&slot, r) in slots.iter().zip(group) {
            ranked[slot] = r;
            placed[slot] = true;
        }
    }
}

/// Resolve, score with the active strategy, leave out candidates whose
/// breaker is open or whose key failed, and keep what the retry budget
/// allows. Ties share traffic by weight.
pub fn plan(table: &Table, requested: &str, live: Live) -> Result<Planned, RouterError> {
    let budget = 1 + table.routing.max_retry_attempts as usize;
    // With smart routing switched off, the owner's default serves everything.
    let requested = table.routing.fixed_group.as_deref().unwrap_or(requested);
    let found = resolve_query(table, requested, Mode::route(SCORED))?;
    // A short prompt without tools sent to an `auto:` group goes to its
    // cheapest members first, when the table asks for that.
    let simple = table.routing.simple_prompt_tokens > 0
        && !live.size.tools
        && live.size.prompt_tokens > 0
        && live.size.prompt_tokens <= table.routing.simple_prompt_tokens
        && found.group.as_deref().is_some_and(|g| g.starts_with("auto:"));
    let cheapest = if simple { score::builtin_ref("cost_first") } else { None };
    let health = (live.health, live.now_ms);
    let mut ranked = rank_with(table, requested, found, live.perf, health, live.rotation, false, cheapest)?;
    if table.multi_key {
        order_keys(table, &mut ranked.candidates, live.rotation);
    }
    // Admitted candidates in rank order; a channel the control plane found down
    // goes after every healthy one, as a last resort. Each is (attempt, score,
    // is a half-open probe).
    let mut healthy: Vec<(Attempt, f64, bool)> = Vec::with_capacity(ranked.candidates.len().min(budget));
    let mut down: Vec<(Attempt, f64, bool)> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let mut denied = 0usize;
    // A budget that left a candidate out: a plan left with nothing is refused as over budget.
    let mut over_budget: Option<&crate::table::BudgetDoc> = None;
    // Models whose context cannot hold the request are left out, but only when
    // another may: the estimate counts bytes, which overstates images and
    // markup, so the providers judge when nothing would be left.
    let sized = live.size.prompt_tokens > 0
        && ranked.candidates.iter().any(|r| r.facts.context.is_some())
        && ranked.candidates.iter().any(|r| live.size.fits(r.facts.context));
    // Keys of one channel admitted for this model (see `KEYS_PER_PLAN`).
    let mut keys_taken: Vec<(&str, String)> = Vec::new();
    for RankedCandidate { candidate: c, score: s, facts, .. } in ranked.candidates {
        let Some(ch) = table.channel(c.channel) else { continue };
        if sized && !live.size.fits(facts.context) {
            out.push(format!(
                "{} (its context of {} tokens cannot hold about {} tokens)",
                ch.scope,
                facts.context.unwrap_or(0),
                live.size.prompt_tokens + live.size.asked_output
            ));
            continue;
        }
        if ch.key.is_some()
            && keys_taken.iter().filter(|k| k.0 == ch.id && k.1 == c.upstream_model).count() >= KEYS_PER_PLAN
        {
            continue;
        }
        if live.token.is_some_and(|t| !t.may_use(table, c.channel, &c.upstream_model)) {
            denied += 1;
            continue;
        }
        if !table.budgets.is_empty() {
            let estimate = table.entry_for(&c).and_then(|e| e.price).map(|p| p.cost(&live.size.usage()));
            let spent = table.budgets.iter().enumerate().find(|(_, b)| {
                // What costs nothing passes a spent budget unless it refuses everything.
                b.covers(&ch.id, requested, live.token.map(|t| t.id.as_str()))
                    && (b.refuse || estimate != Some(0))
                    && !fits(b, live.health.committed(b), estimate)
            });
            if let Some((_, b)) = spent {
                if b.refuse {
                    return Err(budget_error(b, requested, live.now_ms));
                }
                over_budget = Some(b);
                out.push(format!("{} (budget {} spent)", ch.scope, b.id));
                continue;
            }
        }
        if let Some(until) = ch.limits.as_ref().and_then(|l| live.health.limited(&ch.scope, l, live.now_ms)) {
            let when = match until {
                LimitedUntil::Ms(t) => format!("for {:.1} s", t.saturating_sub(live.now_ms) as f64 / 1000.0),
                LimitedUntil::NextDay => "until the provider's day resets".to_string(),
            };
            out.push(format!("{} (at its request limit, {when})", ch.scope));
            continue;
        }
        let probe = match live.health.admit(&ch.scope, &c.upstream_model, live.now_ms, ch.key_ok_ms) {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No(reason, until) => {
                let when = if until == u64::MAX || reason == crate::health::Reason::KeyInvalid {
                    "until its key validates".to_string()
                } else {
                    format!("for {:.1} s", until.saturating_sub(live.now_ms) as f64 / 1000.0)
                };
                out.push(format!("{} ({}, {when})", ch.scope, reason.describe()));
                continue;
            }
        };
        if ch.key.is_some() {
            keys_taken.push((ch.id.as_str(), c.upstream_model.clone()));
        }
        let attempt = Attempt { channel: c.channel, upstream_model: c.upstream_model };
        if ch.healthy {
            healthy.push((attempt, s.total, probe));
        } else {
            down.push((attempt, s.total, probe));
        }
    }
    if healthy.is_empty() && down.is_empty() && out.is_empty() && denied > 0 {
        let id = live.token.map_or("", |t| t.id.as_str());
        return Err(RouterError::forbidden(format!(
            "token {id} may not use any channel serving \"{}\"",
            ascii_safe(requested, 200)
        )));
    }
    if healthy.is_empty() && down.is_empty() {
        if let Some(b) = over_budget {
            return Err(budget_error(b, requested, live.now_ms));
        }
        return Err(RouterError::unavailable(
            "all_channels_unavailable",
            format!("every channel for model \"{}\" is out: {}", ascii_safe(requested, 200), out.join(", ")),
        ));
    }
    healthy.append(&mut down);
    healthy.truncate(budget);
    // One attempt answers, so each budget holds the most that any attempt it
    // covers may cost (a free first choice with a paid fallback holds the fallback's).
    let mut reserved: Reservation = Vec::new();
    for (n, b) in table.budgets.iter().enumerate() {
        let most = healthy
            .iter()
            .filter_map(|(a, _, _)| {
                let ch = table.channel(a.channel)?;
                b.covers(&ch.id, requested, live.token.map(|t| t.id.as_str())).then(|| {
                    let c = Candidate { channel: a.channel, upstream_model: a.upstream_model.clone() };
                    table.entry_for(&c).and_then(|e| e.price).map_or(0, |p| p.cost(&live.size.usage()))
                })
            })
            .max();
        if let Some(pico) = most {
            reserved.push((n, pico));
        }
    }
    let probes = healthy.iter().enumerate().filter(|(_, a)| a.2).map(|(i, _)| i).collect();
    let scores = healthy.iter().map(|a| a.1).collect();
    let plan = Plan { attempts: healthy.into_iter().map(|a| a.0).collect() };
    let strategy = match score::builtin_ref(&ranked.strategy.name) {
        Some(builtin) => Cow::Borrowed(builtin.name.as_str()),
        None => Cow::Owned(ranked.strategy.name.clone()),
    };
    Ok(Planned { plan, probes, strategy, scores, reserved, left_out: out })
}

/// Whether a request that may cost `estimate` fits what is left of `budget`
/// (`committed` spent or held). One whose cost is unknown fits until the
/// budget is spent.
fn fits(budget: &crate::table::BudgetDoc, committed: u64, estimate: Option<u64>) -> bool {
    committed < budget.limit_pico && committed.saturating_add(estimate.unwrap_or(0)) <= budget.limit_pico
}

fn budget_error(b: &crate::table::BudgetDoc, requested: &str, now_ms: u64) -> RouterError {
    let minutes = b.resets_ms.saturating_sub(now_ms).div_ceil(60_000);
    let scope = if b.refuse { "it refuses every request it covers" } else { "no free or local channel serves" };
    RouterError::budget_exceeded(format!(
        "budget {} (limit {} USD) is spent and {scope} \"{}\"; it resets in {}h{:02}m",
        b.id,
        crate::cost::usd_text(b.limit_pico),
        ascii_safe(requested, 200),
        minutes / 60,
        minutes % 60
    ))
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
    fn with_smart_routing_off_the_fixed_group_serves_whatever_is_asked() {
        let mut d = doc(vec![channel("a", 5, &["m1", "m2"]), channel("b", 1, &["m2"])]);
        d.groups.push(crate::groups::GroupDoc {
            name: "fixed".into(),
            members: vec![crate::groups::GroupMember {
                channel: "a".into(),
                model: "m1".into(),
                priority: 1,
                weight: 1,
            }],
            ..Default::default()
        });
        let t = Table::compile(d.clone(), None).unwrap();
        // A group of listed members holds only them.
        assert_eq!(ids(&t, &resolve(&t, "fixed").unwrap()), [("a".into(), "m1".into())]);
        d.routing.fixed_group = Some("fixed".into());
        let t = Table::compile(d, None).unwrap();
        for asked in ["m2", "tag:m2", "anything"] {
            assert_eq!(ids(&t, &resolve(&t, asked).unwrap()), [("a".into(), "m1".into())], "{asked}");
        }
    }

    #[test]
    fn alias_reaches_the_channels_own_name() {
        let mut c = channel("doubao", 1, &["ep-1"]);
        c.aliases.insert("doubao-pro".into(), "ep-1".into());
        let t = Table::compile(doc(vec![c, channel("b", 2, &["doubao-pro"])]), None).unwrap();
        let p = resolve(&t, "doubao-pro").unwrap();
        // Equal scores: channel priority decides (doubao is 1, b is 2).
        assert_eq!(ids(&t, &p), [("doubao".into(), "ep-1".into()), ("b".into(), "doubao-pro".into())]);
    }

    fn keyed(id: &str, priority: i32, keys: &[&str], rotation: crate::table::KeyRotation) -> crate::table::ChannelDoc {
        let mut c = channel(id, priority, &["m"]);
        c.keys = keys
            .iter()
            .map(|k| crate::table::KeyDoc {
                id: (*k).into(),
                auth_value: format!("Bearer secret-{k}"),
                key_ok_ms: 0,
                healthy: true,
            })
            .collect();
        c.key_rotation = rotation;
        c
    }

    fn scopes(t: &Table, p: &Plan) -> Vec<String> {
        p.attempts.iter().map(|a| t.channel(a.channel).unwrap().scope.clone()).collect()
    }

    #[test]
    fn keys_of_a_channel_rotate_or_fill_in_order_and_a_plan_holds_two_of_them() {
        use crate::table::KeyRotation;
        let t = Table::compile(
            doc(vec![keyed("multi", 1, &["k1", "k2", "k3"], KeyRotation::RoundRobin), channel("other", 2, &["m"])]),
            None,
        )
        .unwrap();
        let perf = PerfMap::default();
        let h = HealthMap::default();
        let at = |rotation| {
            let p = plan(
                &t,
                "m",
                Live { health: &h, perf: &perf, now_ms: 1, rotation, token: None, size: RequestSize::default() },
            )
            .unwrap();
            scopes(&t, &p.plan)
        };
        assert_eq!(at(0), ["multi/k1", "multi/k2", "other"]);
        assert_eq!(at(1), ["multi/k2", "multi/k3", "other"]);
        assert_eq!(at(2), ["multi/k3", "multi/k1", "other"]);
        // Each key carries its own secret; the channel is still the channel.
        let (_, k2) = t.channel_by_scope("multi/k2").unwrap();
        assert_eq!(
            (k2.id.as_str(), k2.key.as_deref(), k2.auth_value.as_str()),
            ("multi", Some("k2"), "Bearer secret-k2")
        );
        assert!(!format!("{k2:?}").contains("secret"));

        let t = Table::compile(doc(vec![keyed("multi", 1, &["k1", "k2"], KeyRotation::FillFirst)]), None).unwrap();
        let first = |h: &HealthMap, rotation| {
            let p = plan(
                &t,
                "m",
                Live { health: h, perf: &perf, now_ms: 1_000, rotation, token: None, size: RequestSize::default() },
            )
            .unwrap();
            scopes(&t, &p.plan)
        };
        assert_eq!(first(&h, 0), ["multi/k1", "multi/k2"]);
        assert_eq!(first(&h, 1), ["multi/k1", "multi/k2"]);
        // A revoked key is out on its own: the channel serves with the other.
        let mut h = HealthMap::default();
        h.record("multi/k1", "m", 1_000, Some(crate::health::ErrorClass::KeyInvalid), None, &Default::default());
        assert_eq!(first(&h, 0), ["multi/k2"]);
    }

    #[test]
    fn each_key_has_its_own_request_limit() {
        use crate::table::{KeyRotation, LimitsDoc};
        let limits = LimitsDoc { requests_per_window: 1, window_ms: 60_000, ..Default::default() };
        let mut c = keyed("free", 1, &["a", "b"], KeyRotation::FillFirst);
        c.limits = Some(limits);
        let t = Table::compile(doc(vec![c, channel("paid", 2, &["m"])]), None).unwrap();
        let perf = PerfMap::default();
        let mut h = HealthMap::default();
        let mut served = Vec::new();
        for now in [1, 2, 3] {
            let p = plan(
                &t,
                "m",
                Live { health: &h, perf: &perf, now_ms: now, rotation: now, token: None, size: RequestSize::default() },
            )
            .unwrap();
            let first = scopes(&t, &p.plan)[0].clone();
            h.count_request(&first, &limits, now);
            served.push(first);
        }
        assert_eq!(served, ["free/a", "free/b", "paid"]);
    }

    fn live_at<'a>(health: &'a HealthMap, perf: &'a PerfMap, size: RequestSize) -> Live<'a> {
        Live { health, perf, now_ms: 0, rotation: 0, token: None, size }
    }

    fn priced(id: &str, priority: i32, tags: &[&str], per_million: f64) -> crate::table::ChannelDoc {
        let mut c = channel(id, priority, &["m"]);
        c.tags = tags.iter().map(|t| t.to_string()).collect();
        for m in &mut c.models {
            m.input_price = Some(per_million);
            m.output_price = Some(per_million);
        }
        c
    }

    #[test]
    fn a_spent_budget_leaves_out_what_would_be_paid_and_holds_the_most_a_plan_may_cost() {
        use crate::table::BudgetDoc;
        let budget = BudgetDoc { id: "day".into(), limit_pico: 10_000_000_000, ..Default::default() };
        let mut d = doc(vec![priced("free", 1, &["free"], 0.0), priced("paid", 2, &[], 1.0)]);
        d.routing.max_retry_attempts = 2;
        d.budgets = vec![budget.clone()];
        let t = Table::compile(d, None).unwrap();
        let perf = PerfMap::default();
        // 4,000 prompt + 1,000 answer tokens at 1 USD per 1M: 0.005 USD.
        let size = RequestSize { prompt_tokens: 4_000, output_tokens: 1_000, asked_output: 1_000, tools: false };
        let mut h = HealthMap::default();
        let p = plan(&t, "m", live_at(&h, &perf, size)).unwrap();
        assert_eq!(ids(&t, &p.plan).len(), 2);
        // The free first choice holds what its paid fallback may cost.
        assert_eq!(p.reserved, [(0, 5_000_000_000)]);
        h.reserve(&t.budgets[0], 5_000_000_000);
        assert_eq!(ids(&t, &plan(&t, "m", live_at(&h, &perf, size)).unwrap().plan).len(), 2);
        // Two requests in flight hold the whole budget: the third may not pay.
        h.reserve(&t.budgets[0], 5_000_000_000);
        let p = plan(&t, "m", live_at(&h, &perf, size)).unwrap();
        assert_eq!(ids(&t, &p.plan), [("free".to_string(), "m".to_string())]);
        assert_eq!(p.reserved, [(0, 0)]);
        // They end: one cost 0.001 USD, one nothing; the control plane's sum
        // then holds them, and what ended here before it is not counted twice.
        h.settle(&t.budgets[0], 5_000_000_000, 1_000_000_000);
        h.settle(&t.budgets[0], 5_000_000_000, 0);
        assert_eq!(h.committed(&t.budgets[0]), 1_000_000_000);
        let summed = BudgetDoc { spent_pico: 1_000_000_000, as_of_ms: 7, ..budget.clone() };
        assert_eq!(h.committed(&summed), 1_000_000_000);
        assert_eq!(HealthMap::decode(&h.encode()), h);

        // Spent: a paid-only model is refused as over budget, not as unavailable.
        let mut d = doc(vec![priced("paid", 2, &[], 1.0)]);
        d.budgets = vec![BudgetDoc { spent_pico: 10_000_000_000, ..budget.clone() }];
        let t = Table::compile(d, None).unwrap();
        let e = plan(&t, "m", live_at(&HealthMap::default(), &perf, size)).unwrap_err();
        assert_eq!((e.status, e.code), (429, "budget_exceeded"));
        assert!(e.message.contains("budget day"), "{}", e.message);
        // A refusing budget refuses what it covers, free or not; one on another
        // channel does not touch this one.
        let mut d = doc(vec![priced("free", 1, &["free"], 0.0)]);
        d.budgets = vec![BudgetDoc { spent_pico: 10_000_000_000, refuse: true, ..budget.clone() }];
        let t = Table::compile(d.clone(), None).unwrap();
        assert_eq!(plan(&t, "m", live_at(&HealthMap::default(), &perf, size)).unwrap_err().status, 429);
        d.budgets[0].channel = Some("elsewhere".into());
        let t = Table::compile(d, None).unwrap();
        assert!(plan(&t, "m", live_at(&HealthMap::default(), &perf, size)).is_ok());
    }

    #[test]
    fn a_request_goes_only_where_its_context_fits_unless_nothing_would_be_left() {
        let mut small = channel("small", 1, &["m"]);
        small.models[0].context_length = Some(8_000);
        let mut large = channel("large", 2, &["m"]);
        large.models[0].context_length = Some(128_000);
        let t = Table::compile(doc(vec![small, large]), None).unwrap();
        let (h, perf) = (HealthMap::default(), PerfMap::default());
        let first = |body_len, max_tokens| {
            let size = RequestSize::of(body_len, max_tokens, 1024);
            let p = plan(&t, "m", live_at(&h, &perf, size)).unwrap();
            let mut got = ids(&t, &p.plan).into_iter().map(|(c, _)| c).collect::<Vec<_>>();
            got.sort();
            got
        };
        assert_eq!(first(4_000, None), ["large", "small"]);
        // 7,000 prompt tokens and 2,000 asked for: only the large context holds it.
        assert_eq!(first(28_000, Some(2_000)), ["large"]);
        // Nothing holds it by the estimate (a body of images, say): the providers judge.
        assert_eq!(first(4_000_000, None), ["large", "small"]);
    }

    #[test]
    fn token_limits_take_a_channel_out_and_quota_remaining_follows_its_counts() {
        use crate::table::LimitsDoc;
        let limits =
            LimitsDoc { tokens_per_window: 1_000, window_ms: 60_000, requests_per_day: 10, ..Default::default() };
        let mut free = channel("free", 1, &["m"]);
        free.limits = Some(limits);
        let t = Table::compile(doc(vec![free, channel("paid", 2, &["m"])]), None).unwrap();
        let mut h = HealthMap::default();
        assert_eq!(h.quota_remaining("free", &limits, 5), 1.0);
        h.count_request("free", &limits, 5);
        h.count_tokens("free", &limits, 600, 5);
        // 600 of 1,000 tokens in the window: 40% left (the day's 1 of 10 requests leaves 90%).
        assert!((h.quota_remaining("free", &limits, 10) - 0.4).abs() < 1e-9);
        let ranked = plan(&t, "m", live_at(&h, &PerfMap::default(), RequestSize::default())).unwrap();
        assert_eq!(ids(&t, &ranked.plan)[0].0, "free");
        h.count_tokens("free", &limits, 500, 6);
        assert_eq!(h.limited("free", &limits, 10), Some(crate::health::LimitedUntil::Ms(60_005)));
        let p = plan(&t, "m", live_at(&h, &PerfMap::default(), RequestSize::default())).unwrap();
        assert_eq!(ids(&t, &p.plan), [("paid".to_string(), "m".to_string())]);
        assert_eq!(HealthMap::decode(&h.encode()), h);
    }

    #[test]
    fn short_simple_prompts_to_an_auto_group_go_to_its_cheapest_members() {
        let mut d = doc(vec![priced("cheap", 1, &[], 0.1), priced("dear", 1, &[], 30.0)]);
        for c in &mut d.channels {
            c.models[0].id = "qwen3-235b-a22b".into();
        }
        d.channels[0].models[0].id = "qwen3-8b".into();
        d.groups = vec![crate::groups::GroupDoc {
            name: "auto:smart".into(),
            strategy: crate::score::builtin_ref("quality_optimized").cloned(),
            ..Default::default()
        }];
        d.routing.simple_prompt_tokens = 100;
        let t = Table::compile(d, None).unwrap();
        let (h, perf) = (HealthMap::default(), PerfMap::default());
        let first = |size| ids(&t, &plan(&t, "auto:smart", live_at(&h, &perf, size)).unwrap().plan)[0].0.clone();
        assert_eq!(first(RequestSize::of(2_000, None, 1024)), "dear");
        assert_eq!(first(RequestSize::of(200, None, 1024)), "cheap");
        assert_eq!(first(RequestSize { tools: true, ..RequestSize::of(200, None, 1024) }), "dear");
    }

    #[test]
    fn unknown_model_is_404_naming_it() {
        let t = Table::compile(doc(vec![channel("a", 1, &["m"])]), None).unwrap();
        let e = resolve(&t, "nope-model").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("nope-model"));
    }

    #[test]
    fn a_channel_at_its_request_limit_is_left_out_until_its_window_or_day_resets() {
        use crate::table::LimitsDoc;
        let limits = LimitsDoc {
            requests_per_window: 2,
            window_ms: 1_000,
            requests_per_day: 3,
            day_start_ms: 100,
            provider_headers: false,
            ..Default::default()
        };
        let mut free = channel("free", 1, &["m"]);
        free.limits = Some(limits);
        let t = Table::compile(doc(vec![free, channel("paid", 2, &["m"])]), None).unwrap();
        let perf = PerfMap::default();
        let first = |h: &HealthMap, now_ms| {
            let p = plan(
                &t,
                "m",
                Live { health: h, perf: &perf, now_ms, rotation: 0, token: None, size: RequestSize::default() },
            )
            .unwrap();
            ids(&t, &p.plan)[0].0.clone()
        };
        let mut h = HealthMap::default();
        for now in [1_000, 1_100] {
            assert_eq!(first(&h, now), "free");
            h.count_request("free", &limits, now);
        }
        // Two in the window that began at 1,000: out until 2,000.
        assert_eq!(first(&h, 1_500), "paid");
        assert_eq!(first(&h, 2_000), "free");
        h.count_request("free", &limits, 2_000);
        // The day's three are spent: out until the control plane moves the day.
        assert_eq!(first(&h, 9_000), "paid");
        let next_day = LimitsDoc { day_start_ms: 5_000, ..limits };
        assert_eq!(h.limited("free", &next_day, 9_000), None);
        // The counts travel between workers with the rest of the health state.
        assert_eq!(HealthMap::decode(&h.encode()), h);
        // Only limited channels are counted, so the limit also names the channel when all are out.
        let only = Table::compile(
            doc(vec![{
                let mut c = channel("free", 1, &["m"]);
                c.limits = Some(limits);
                c
            }]),
            None,
        )
        .unwrap();
        let e = plan(
            &only,
            "m",
            Live { health: &h, perf: &perf, now_ms: 9_000, rotation: 0, token: None, size: RequestSize::default() },
        )
        .unwrap_err();
        assert!(e.message.contains("free (at its request limit, until the provider's day resets)"), "{}", e.message);
    }

    #[test]
    fn channels_out_of_health_are_left_out_and_named_when_all_are() {
        use crate::health::{classify, Policy};
        let t = Table::compile(doc(vec![channel("a", 1, &["m"]), channel("b", 2, &["m"])]), None).unwrap();
        let mut h = HealthMap::default();
        h.record("a", "m", 1_000, classify(429), Some(2_000), &Policy::default());
        let perf = PerfMap::default();
        let live =
            |now_ms| Live { health: &h, perf: &perf, now_ms, rotation: 0, token: None, size: RequestSize::default() };
        let p = plan(&t, "m", live(1_500)).unwrap();
        assert_eq!(ids(&t, &p.plan), [("b".into(), "m".into())]);
        assert!(p.probes.is_empty());
        let mut h = h.clone();
        h.record("b", "m", 1_000, classify(401), None, &Policy::default());
        let live =
            |now_ms| Live { health: &h, perf: &perf, now_ms, rotation: 0, token: None, size: RequestSize::default() };
        let e = plan(&t, "m", live(1_500)).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.message.contains("a (rate limited, for 1.5 s)"), "{}", e.message);
        assert!(e.message.contains("b (key invalid, until its key validates)"), "{}", e.message);
        // The rest is over: a is back.
        let p = plan(&t, "m", live(3_000)).unwrap();
        assert_eq!(ids(&t, &p.plan), [("a".into(), "m".into())]);
    }

    #[test]
    fn routing_filters_narrow_searches_not_named_models() {
        let mut d = doc(vec![channel("a", 1, &["chat-4k", "chat-128k"])]);
        d.routing.filters.min_context_length = Some(32_000);
        let t = Table::compile(d, None).unwrap();
        assert_eq!(ids(&t, &resolve(&t, "tag:chat").unwrap()), [("a".into(), "chat-128k".into())]);
        assert_eq!(ids(&t, &resolve(&t, "chat-4k").unwrap()), [("a".into(), "chat-4k".into())]);
        let mut d = doc(vec![channel("a", 1, &["chat-4k"])]);
        d.routing.filters.min_context_length = Some(32_000);
        let t = Table::compile(d, None).unwrap();
        assert!(resolve(&t, "tag:chat").unwrap_err().message.contains("model_filters"));
    }

    #[test]
    fn explain_and_routing_agree_under_filters() {
        let mut d = doc(vec![channel("a", 1, &["chat-4k", "chat-128k"]), channel("b", 2, &["chat-32k"])]);
        d.routing.filters.min_context_length = Some(16_000);
        let t = Table::compile(d, None).unwrap();
        let routed: Vec<String> =
            resolve(&t, "tag:chat").unwrap().attempts.iter().map(|a| a.upstream_model.clone()).collect();
        let v = crate::resolve::explain_json(&t, "tag:chat");
        let explained: Vec<String> =
            v["candidates"].as_array().unwrap().iter().map(|c| c["model"].as_str().unwrap().to_string()).collect();
        assert_eq!(routed, explained);
        assert!(v["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["model"] == "chat-4k" && x["reason"].as_str().unwrap().contains("model_filters")));
    }

    #[test]
    fn cost_cap_admits_free_and_cheap_only() {
        use crate::groups::GroupFilters;
        use crate::table::admits;
        let mut d = doc(vec![channel("a", 1, &["m-cheap", "m-dear", "m-unknown", "m-x:free"])]);
        d.channels[0].models[0].input_price = Some(0.1);
        d.channels[0].models[0].output_price = Some(0.3);
        d.channels[0].models[1].input_price = Some(5.0);
        d.channels[0].models[1].output_price = Some(15.0);
        let t = Table::compile(d, None).unwrap();
        let cap = GroupFilters { max_cost_per_1k: Some(0.001), ..Default::default() };
        let ok: Vec<&str> = t.entries.iter().filter(|e| admits(&cap, e)).map(|e| e.id.as_str()).collect();
        assert_eq!(ok, ["m-cheap", "m-x:free"]);
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
