//! What the roles record as requests go by: channel health (the breakers),
//! speed samples, and the attempts still waiting to be judged. Written once
//! for both shims on top of [`Shared`].

use std::cell::{Cell, RefCell};

use crate::flow::UnansweredLedger;
use crate::health::{ErrorClass, HealthMap, Policy, State};
use crate::table::{ClientToken, TokenLimits};

use super::host::Shared;
use super::stats::Counter;

/// One attempt's outcome on `channel`/`model`, for the breakers. A healthy
/// answer on a channel without health state changes nothing and costs one
/// lookup.
pub fn record_health<S: Shared>(
    shared: &S,
    channel: &str,
    model: &str,
    class: Option<ErrorClass>,
    retry_after_ms: Option<u64>,
    policy: &Policy,
) {
    if class == Some(ErrorClass::Client) {
        return;
    }
    if class.is_none() && !shared.health(|m| m.tracks(channel, model)) {
        return;
    }
    let now = shared.now_ms();
    let key = HealthMap::scope_key(channel, model, class);
    let is_open = |m: &HealthMap| m.entries.get(&key).is_some_and(|h| h.state == State::Open);
    let was_open = shared.health(is_open);
    if !shared.update_health(|m| m.record(channel, model, now, class, retry_after_ms, policy)) {
        return;
    }
    if !was_open && shared.health(is_open) {
        shared.stats(|s| s.add(Counter::ChannelEjections, channel, 1));
        let why = shared.health(|m| m.entries.get(&key).map(|h| h.reason.describe()).unwrap_or(""));
        let scope = if key == channel { "all models".to_string() } else { format!("model {model}") };
        log::warn!("smart-router: channel {channel} ({scope}) is out: {why}");
    }
}

/// A client token's limits and where its counts are kept, if it has limits.
fn limited_token<'t>(table: &'t crate::Table, client: Option<&str>) -> Option<(&'t ClientToken, TokenLimits)> {
    let token = table.token_by_id(client?)?;
    Some((token, token.limits?))
}

/// A routed request starts: hold its reservation against its budgets and count
/// it against its client token's request limit (one write of the shared state).
pub fn hold<S: Shared>(shared: &S, table: &crate::Table, reserved: &crate::plan::Reservation, client: Option<&str>) {
    let token = limited_token(table, client).filter(|(_, l)| l.requests_per_window > 0);
    if reserved.is_empty() && token.is_none() {
        return;
    }
    let now = if token.is_some() { shared.now_ms() } else { 0 };
    shared.update_health(|h| {
        for &(n, pico) in reserved {
            if let Some(b) = table.budgets.get(n) {
                h.reserve(b, pico);
            }
        }
        if let Some((t, l)) = token {
            h.count_in_window(&t.requests_key, l.window_ms, 1, now);
        }
        true
    });
}

/// What a request that ended used: the answering channel, the model asked for,
/// its cost (picodollars, when priced) and its tokens.
pub struct Used<'a> {
    pub channel: &'a str,
    pub model: &'a str,
    pub cost_pico: Option<u64>,
    pub tokens: u64,
}

/// A request ended: release what it held, count its cost against each budget
/// covering it and its tokens against its client token's limit (one write).
pub fn release<S: Shared>(
    shared: &S,
    table: &crate::Table,
    reserved: &crate::plan::Reservation,
    client: Option<&str>,
    used: Option<Used>,
) {
    let token = limited_token(table, client).filter(|(_, l)| l.tokens_per_window > 0);
    let tokens = used.as_ref().map_or(0, |u| u.tokens);
    if table.budgets.is_empty() && (token.is_none() || tokens == 0) {
        return;
    }
    let now = if token.is_some() { shared.now_ms() } else { 0 };
    shared.update_health(|h| {
        let mut changed = false;
        for (n, b) in table.budgets.iter().enumerate() {
            let held = reserved.iter().find(|r| r.0 == n).map_or(0, |r| r.1);
            let cost =
                used.as_ref().filter(|u| b.covers(u.channel, u.model, client)).and_then(|u| u.cost_pico).unwrap_or(0);
            if held > 0 || cost > 0 {
                changed |= h.settle(b, held, cost);
            }
        }
        if let Some((t, l)) = token.filter(|_| tokens > 0) {
            changed |= h.count_in_window(&t.tokens_key, l.window_ms, u32::try_from(tokens).unwrap_or(u32::MAX), now);
        }
        changed
    });
}

/// Count the tokens an answer used against its channel's (or key's) token limits.
pub fn count_channel_tokens<S: Shared>(shared: &S, table: &crate::Table, handle: u32, tokens: u64) {
    let Some((ch, limits)) = table.channel(handle).and_then(|c| Some((c, c.limits?))) else {
        return;
    };
    if tokens == 0 || (limits.tokens_per_window == 0 && limits.tokens_per_day == 0) {
        return;
    }
    let now = shared.now_ms();
    shared.update_health(|h| h.count_tokens(&ch.scope, &limits, tokens, now));
}

/// What the control plane says other Envoys counted for client tokens (the
/// answer to a health report): it replaces what was known.
pub fn take_remote_counts<S: Shared>(shared: &S, answer: &[u8]) {
    let counted = HealthMap::decode(&String::from_utf8_lossy(answer));
    shared.update_health(|h| {
        if h.remote == counted.windows {
            return false;
        }
        h.remote = counted.windows.clone();
        true
    });
}

/// Mark the half-open probes a request is about to send.
pub fn start_probes<S: Shared>(shared: &S, probes: &[(String, String)], policy: &Policy) {
    if probes.is_empty() {
        return;
    }
    let now = shared.now_ms();
    shared.update_health(|m| {
        let before = m.clone();
        for (channel, model) in probes {
            m.start_probe(channel, model, now, policy);
        }
        *m != before
    });
}

/// Timed samples a channel+model needs before timing is sampled.
const WARM_UP: u64 = 16;
/// After warm-up, one attempt in this many is timed (two clock reads, each a
/// host call in wasm, saved on the rest). Outcomes are always counted.
const SAMPLE_EVERY: u64 = 4;

thread_local! {
    /// Attempts this thread decided about timing, for sampling.
    static TIMING: Cell<u64> = const { Cell::new(0) };
    /// Requests planned on this thread: spreads equally good channels and ties
    /// each attempt to its request (every filter of a request runs on one thread).
    static ROTATION: Cell<u64> = const { Cell::new(0) };
    /// This thread's attempts that ended without a response (see [`UnansweredLedger`]).
    static LEDGER: RefCell<UnansweredLedger> = RefCell::new(UnansweredLedger::default());
    /// Requests whose attempt side answered the client itself (it could not
    /// prepare an attempt). Kept here rather than in a response header, which a
    /// provider could forge.
    static ATTEMPT_ERRORS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What the answering attempt of a request learnt from its response: kept
/// per thread by request id for the router role, which makes the request's
/// record when the request ends (an attempt may end before or after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The channel's handle in the request's table, and the model it was asked for.
    pub channel: u32,
    pub model: String,
    /// What the provider reported.
    pub usage: Option<crate::usage::Usage>,
    /// Events streamed so far (the completion estimate when no usage comes).
    pub events: u64,
    pub cost_pico: Option<u64>,
    /// The response ended as it should (a whole body, or a stream's `[DONE]`).
    pub complete: bool,
}

thread_local! {
    static OUTCOMES: RefCell<hashbrown::HashMap<u64, Outcome>> = RefCell::new(hashbrown::HashMap::new());
}

/// Bound on outcomes kept per thread (a leak guard, should a request's end never be seen).
const MAX_OUTCOMES: usize = 4096;

/// The answering attempt's outcome so far (a later report replaces it).
pub fn report_outcome(request_id: u64, outcome: Outcome) {
    OUTCOMES.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() >= MAX_OUTCOMES && !o.contains_key(&request_id) {
            o.clear();
        }
        o.insert(request_id, outcome);
    });
}

/// Update the outcome in place (a stream's progress), if there is one.
pub fn update_outcome(request_id: u64, change: impl FnOnce(&mut Outcome)) {
    OUTCOMES.with(|o| {
        if let Some(out) = o.borrow_mut().get_mut(&request_id) {
            change(out);
        }
    });
}

/// The request's outcome, taken (the request is over).
pub fn take_outcome(request_id: u64) -> Option<Outcome> {
    OUTCOMES.with(|o| {
        let mut o = o.borrow_mut();
        if o.is_empty() {
            return None;
        }
        o.remove(&request_id)
    })
}

/// Bound on requests remembered in [`ATTEMPT_ERRORS`] (a leak guard).
const MAX_ATTEMPT_ERRORS: usize = 1024;

/// The attempt side of request `request_id` answered the client with an error.
pub fn attempt_error(request_id: u64) {
    ATTEMPT_ERRORS.with(|e| {
        let mut e = e.borrow_mut();
        if e.len() >= MAX_ATTEMPT_ERRORS {
            e.clear();
        }
        e.push(request_id);
    });
}

/// Whether the attempt side of `request_id` answered with an error (and forget it).
pub fn take_attempt_error(request_id: u64) -> bool {
    ATTEMPT_ERRORS.with(|e| {
        let mut e = e.borrow_mut();
        // (Nearly always empty: one check, no search.)
        if e.is_empty() {
            return false;
        }
        match e.iter().position(|&id| id == request_id) {
            Some(i) => {
                e.swap_remove(i);
                true
            }
            None => false,
        }
    })
}

/// The request ended: forget it either way.
pub fn forget_attempt_error(request_id: u64) {
    take_attempt_error(request_id);
}

/// Whether to time this attempt: always while a channel+model has few samples,
/// then one in [`SAMPLE_EVERY`].
pub fn should_time<S: Shared>(shared: &S, channel: &str, model: &str) -> bool {
    let n = TIMING.with(|c| {
        let v = c.get().wrapping_add(1);
        c.set(v);
        v
    });
    n.is_multiple_of(SAMPLE_EVERY) || shared.perf(|p| p.get(channel, model).map_or(0, |p| p.samples)) < WARM_UP
}

/// A new request number on this thread.
pub fn next_rotation() -> u64 {
    ROTATION.with(|r| {
        let v = r.get().wrapping_add(1);
        r.set(v);
        v
    })
}

/// An attempt of request `request_id` ended without any response.
pub fn unanswered(request_id: u64, channel: &str, model: &str) {
    LEDGER.with(|l| l.borrow_mut().add(request_id, channel, model));
}

/// Request `request_id` ended: its unanswered attempts count against their
/// channels if the client was still there to get an answer.
pub fn settle_unanswered<S: Shared>(shared: &S, request_id: u64, responded: bool, policy: &Policy) {
    let failed = LEDGER.with(|l| l.borrow_mut().take(request_id, responded));
    for (channel, model) in failed {
        record_health(shared, &channel, &model, crate::health::classify(0), None, policy);
        shared.add_perf(&channel, &model, false, None);
    }
}
