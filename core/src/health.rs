//! Channel health as pure state transitions.
//!
//! Error classes decide the scope and the cure:
//! - 401/403, key invalid: the whole channel is out at once (not model by model)
//!   until the control plane validates its key again after the failure;
//! - 429, rate limited: that channel+model rests for `Retry-After` (or the default);
//! - 5xx, 408, no response (refused, reset, timeout): a circuit breaker per
//!   channel+model (per channel when nothing answered at all) opens when failures
//!   in a window reach a count and a ratio, stays open for a cooldown that doubles
//!   on each trip, then lets one probe through (half-open): success closes it,
//!   failure opens it again;
//! - other 4xx are the client's problem and leave health alone.
//!
//! The filter keeps the entries of all channels that failed recently in one
//! shared-data value ([`HealthMap::encode`]) so every Envoy worker sees them;
//! healthy channels have no entry, so a healthy request writes nothing.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    KeyInvalid,
    RateLimited,
    /// The upstream answered 5xx/408.
    Server,
    /// Nothing came back: connection refused, reset, timeout.
    Unreachable,
    /// 400/404/422...: the request's fault, not the channel's.
    Client,
}

/// `None` for a success (1xx-3xx). `status == 0` means no response at all.
pub fn classify(status: u16) -> Option<ErrorClass> {
    match status {
        0 => Some(ErrorClass::Unreachable),
        100..=399 => None,
        401 | 403 => Some(ErrorClass::KeyInvalid),
        429 => Some(ErrorClass::RateLimited),
        408 | 500..=599 => Some(ErrorClass::Server),
        _ => Some(ErrorClass::Client),
    }
}

/// A provider's 400 saying the prompt does not fit the model's context: OpenAI's
/// `context_length_exceeded` and the wordings other providers use.
pub fn is_context_length_error(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(8192)]).to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context length",
        "context window",
        "too many tokens",
        "prompt is too long",
        "input is too long",
        "reduce the length",
    ]
    .iter()
    .any(|p| text.contains(p))
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Policy {
    pub window_ms: u64,
    /// Failures in the window before the breaker may open.
    pub min_failures: u32,
    /// And the share of failures among the window's attempts.
    pub failure_ratio: f64,
    /// First cooldown; doubles per consecutive trip up to `max_cooldown_ms`.
    pub cooldown_ms: u64,
    pub max_cooldown_ms: u64,
    /// A 429 without `Retry-After` rests this long.
    pub rate_limit_ms: u64,
    /// How long a half-open probe may take before another may go.
    pub probe_timeout_ms: u64,
    /// A channel whose key failed is probed again after this long even without a
    /// validation (for providers whose `/models` cannot validate a key).
    pub key_retry_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            window_ms: 30_000,
            min_failures: 3,
            failure_ratio: 0.5,
            cooldown_ms: 10_000,
            max_cooldown_ms: 600_000,
            rate_limit_ms: 60_000,
            probe_timeout_ms: 30_000,
            key_retry_ms: 1_800_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    None,
    KeyInvalid,
    RateLimited,
    Failing,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::None => "healthy",
            Reason::KeyInvalid => "key invalid",
            Reason::RateLimited => "rate limited",
            Reason::Failing => "failing",
        }
    }
}

/// One channel's (or channel+model's) health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    pub reason: Reason,
    /// When the current state began (ms since the epoch).
    pub since_ms: u64,
    /// Open: when it may be probed. Half-open: when the probe counts as lost.
    pub until_ms: u64,
    pub window_start_ms: u64,
    pub failures: u32,
    pub successes: u32,
    /// Consecutive trips, for the doubling cooldown.
    pub trips: u32,
}

/// What a plan may do with a channel now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Half-open: this request may be the one probe.
    Probe,
    /// Out, with why and until when (`u64::MAX`: until the key validates).
    No(Reason, u64),
}

impl Health {
    pub fn new(now: u64) -> Self {
        Self {
            state: State::Closed,
            reason: Reason::None,
            since_ms: now,
            until_ms: 0,
            window_start_ms: now,
            failures: 0,
            successes: 0,
            trips: 0,
        }
    }

    /// `key_ok_ms`: when the control plane last validated the channel's key.
    pub fn admit(&self, now: u64, key_ok_ms: u64) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open if self.reason == Reason::KeyInvalid => {
                if key_ok_ms > self.since_ms {
                    Admit::Yes
                } else if now >= self.until_ms {
                    Admit::Probe
                } else {
                    Admit::No(Reason::KeyInvalid, u64::MAX)
                }
            }
            State::Open if now >= self.until_ms => {
                // A rest that ran out needs no probe; a tripped breaker does.
                if self.reason == Reason::RateLimited {
                    Admit::Yes
                } else {
                    Admit::Probe
                }
            }
            State::Open => Admit::No(self.reason, self.until_ms),
            State::HalfOpen if now >= self.until_ms => Admit::Probe,
            State::HalfOpen => Admit::No(self.reason, self.until_ms),
        }
    }

    /// A probe is on its way: others wait until it answers or times out.
    pub fn start_probe(&mut self, now: u64, policy: &Policy) {
        self.state = State::HalfOpen;
        self.until_ms = now.saturating_add(policy.probe_timeout_ms);
    }

    /// Record one attempt's outcome.
    pub fn record(&mut self, now: u64, class: Option<ErrorClass>, retry_after_ms: Option<u64>, policy: &Policy) {
        if now.saturating_sub(self.window_start_ms) > policy.window_ms {
            self.window_start_ms = now;
            self.failures = 0;
            self.successes = 0;
        }
        match class {
            None => match self.state {
                State::Closed => self.successes = self.successes.saturating_add(1),
                // The probe came back (or, its mark lost to a race, an attempt
                // after the cooldown did): closed again.
                State::HalfOpen => *self = Health::new(now),
                State::Open if now >= self.until_ms => *self = Health::new(now),
                // A straggler sent before the breaker opened proves little.
                State::Open => {}
            },
            Some(ErrorClass::Client) => {}
            Some(ErrorClass::KeyInvalid) => {
                self.state = State::Open;
                self.reason = Reason::KeyInvalid;
                self.since_ms = now;
                self.until_ms = now.saturating_add(policy.key_retry_ms);
            }
            Some(ErrorClass::RateLimited) => {
                self.state = State::Open;
                self.reason = Reason::RateLimited;
                self.since_ms = now;
                self.until_ms = now.saturating_add(retry_after_ms.unwrap_or(policy.rate_limit_ms));
            }
            Some(ErrorClass::Server | ErrorClass::Unreachable) => {
                self.failures = self.failures.saturating_add(1);
                let total = f64::from(self.failures) + f64::from(self.successes);
                let tripped = self.state == State::HalfOpen
                    || (self.failures >= policy.min_failures
                        && f64::from(self.failures) / total >= policy.failure_ratio);
                if tripped {
                    let cooldown =
                        policy.cooldown_ms.saturating_mul(1u64 << self.trips.min(20)).min(policy.max_cooldown_ms);
                    self.state = State::Open;
                    self.reason = Reason::Failing;
                    self.since_ms = now;
                    self.until_ms = now.saturating_add(cooldown);
                    self.trips = self.trips.saturating_add(1);
                    self.window_start_ms = now;
                    self.failures = 0;
                    self.successes = 0;
                }
            }
        }
    }

    /// An entry worth keeping: anything but a quiet closed breaker.
    pub fn is_interesting(&self, now: u64, policy: &Policy) -> bool {
        self.state != State::Closed
            || (self.failures > 0 && now.saturating_sub(self.window_start_ms) <= policy.window_ms)
    }
}

/// Health entries by scope key: `<channel>` for channel-wide, `<channel> <model>`
/// for one model on a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthMap {
    pub entries: BTreeMap<String, Health>,
    /// Requests sent to each channel that has limits, in its current window and day.
    pub windows: BTreeMap<String, Window>,
    /// What this Envoy spent and holds in reserve against each budget.
    pub spend: BTreeMap<String, Spend>,
    /// Counts other Envoys made in their windows (client tokens' limits), as
    /// the control plane last summed them.
    pub remote: BTreeMap<String, Window>,
}

/// One budget's spending on this Envoy since the control plane's last sum
/// (`as_of_ms`): settled costs of requests that ended, and the reservations of
/// requests still in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub as_of_ms: u64,
    pub settled_pico: u64,
    pub reserved_pico: u64,
}

/// A limited channel's counts: requests in the window that began at
/// `start_ms`, and in the day that began at `day_start_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    pub count: u32,
    pub day_start_ms: u64,
    pub day_count: u32,
}

/// Until when a channel at one of its limits stays out: the end of its window,
/// or the provider's next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedUntil {
    Ms(u64),
    NextDay,
}

/// `n` more in the window (started afresh when it ended) and in the day.
fn add_to_window(w: &mut Window, limits: &crate::table::LimitsDoc, n: u32, now: u64) {
    if w.count == 0 || now >= w.start_ms.saturating_add(limits.window_ms) {
        w.start_ms = now;
        w.count = 0;
    }
    if w.day_start_ms != limits.day_start_ms {
        w.day_start_ms = limits.day_start_ms;
        w.day_count = 0;
    }
    w.count = w.count.saturating_add(n);
    w.day_count = w.day_count.saturating_add(n);
}

/// Where a limited channel's (or key's) tokens are counted, beside its requests.
pub fn tokens_key(scope: &str) -> String {
    format!("{scope} tokens")
}

fn tokens_window<'m>(map: &'m HealthMap, scope: &str) -> Option<&'m Window> {
    map.windows.get(&tokens_key(scope))
}

pub fn channel_key(channel: &str) -> String {
    channel.to_string()
}

/// Model names go into a line-based format: keep them on one line.
pub fn model_key(channel: &str, model: &str) -> String {
    let clean: String = model.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
    format!("{channel} {clean}")
}

/// Call `f` with [`model_key`]`(channel, model)`, built on the stack when it is
/// short and plain (every lookup on the request path goes through here).
pub fn with_model_key<R>(channel: &str, model: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 160];
    let len = channel.len() + 1 + model.len();
    let plain = model.bytes().all(|b| b.is_ascii() && !b.is_ascii_whitespace());
    if len <= buf.len() && plain {
        buf[..channel.len()].copy_from_slice(channel.as_bytes());
        buf[channel.len()] = b' ';
        buf[channel.len() + 1..len].copy_from_slice(model.as_bytes());
        if let Ok(key) = std::str::from_utf8(&buf[..len]) {
            return f(key);
        }
    }
    f(&model_key(channel, model))
}

impl HealthMap {
    /// Nothing recorded: no channel failing, none limited.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.windows.is_empty() && self.spend.is_empty() && self.remote.is_empty()
    }

    /// Add `n` to the count under `key` in its window of `window_ms` (a window
    /// starts with its first count). Always a change.
    pub fn count_in_window(&mut self, key: &str, window_ms: u64, n: u32, now: u64) -> bool {
        self.with_window(key, |w| {
            if w.count == 0 || now >= w.start_ms.saturating_add(window_ms) {
                w.start_ms = now;
                w.count = 0;
            }
            w.count = w.count.saturating_add(n);
        });
        true
    }

    /// The count under `key` in windows still open at `now`, here and on other
    /// Envoys, and when the last of those windows ends.
    pub fn window_total(&self, key: &str, window_ms: u64, now: u64) -> (u64, u64) {
        let mut total = 0u64;
        let mut ends = now;
        for w in [self.windows.get(key), self.remote.get(key)].into_iter().flatten() {
            let end = w.start_ms.saturating_add(window_ms);
            if now < end {
                total += u64::from(w.count);
                ends = ends.max(end);
            }
        }
        (total, ends)
    }

    /// What `budget` has spent and holds in reserve: the control plane's sum,
    /// what ended here since, and what is in flight here.
    pub fn committed(&self, budget: &crate::table::BudgetDoc) -> u64 {
        let Some(s) = self.spend.get(&budget.id) else { return budget.spent_pico };
        let settled = if s.as_of_ms == budget.as_of_ms { s.settled_pico } else { 0 };
        budget.spent_pico.saturating_add(settled).saturating_add(s.reserved_pico)
    }

    /// Hold `pico` against `budget` for a request in flight. Always a change.
    pub fn reserve(&mut self, budget: &crate::table::BudgetDoc, pico: u64) -> bool {
        self.with_spend(budget, |s| s.reserved_pico = s.reserved_pico.saturating_add(pico));
        true
    }

    /// A request ended: release its reservation of `reserved` and count what
    /// it cost. Always a change.
    pub fn settle(&mut self, budget: &crate::table::BudgetDoc, reserved: u64, cost: u64) -> bool {
        self.with_spend(budget, |s| {
            s.reserved_pico = s.reserved_pico.saturating_sub(reserved);
            s.settled_pico = s.settled_pico.saturating_add(cost);
        });
        true
    }

    /// The budget's entry, started afresh when the control plane summed again
    /// (its sum now holds what ended here before).
    fn with_spend(&mut self, budget: &crate::table::BudgetDoc, change: impl FnOnce(&mut Spend)) {
        let fresh = |s: &mut Spend| {
            if s.as_of_ms != budget.as_of_ms {
                s.as_of_ms = budget.as_of_ms;
                s.settled_pico = 0;
            }
        };
        // (The key is copied only when it is new, not on every request.)
        match self.spend.get_mut(&budget.id) {
            Some(s) => {
                fresh(s);
                change(s);
            }
            None => {
                let mut s = Spend::default();
                fresh(&mut s);
                change(&mut s);
                self.spend.insert(budget.id.clone(), s);
            }
        }
    }

    /// Change the window under `key`, made when it is new.
    fn with_window(&mut self, key: &str, change: impl FnOnce(&mut Window)) {
        match self.windows.get_mut(key) {
            Some(w) => change(w),
            None => {
                let mut w = Window::default();
                change(&mut w);
                self.windows.insert(key.to_string(), w);
            }
        }
    }

    /// Whether `channel` is at one of `limits` at `now`.
    pub fn limited(&self, channel: &str, limits: &crate::table::LimitsDoc, now: u64) -> Option<LimitedUntil> {
        let requests = (u64::from(limits.requests_per_window), u64::from(limits.requests_per_day));
        let tokens = (limits.tokens_per_window, limits.tokens_per_day);
        // (Tokens are looked up only where they are limited.)
        let counted = if tokens == (0, 0) { None } else { tokens_window(self, channel) };
        for (w, (per_window, per_day)) in [(self.windows.get(channel), requests), (counted, tokens)] {
            let Some(w) = w else { continue };
            let window_end = w.start_ms.saturating_add(limits.window_ms);
            if per_window > 0 && now < window_end && u64::from(w.count) >= per_window {
                return Some(LimitedUntil::Ms(window_end));
            }
            if per_day > 0 && w.day_start_ms == limits.day_start_ms && u64::from(w.day_count) >= per_day {
                return Some(LimitedUntil::NextDay);
            }
        }
        None
    }

    /// How much of its tightest limit `scope` has left at `now` (0..=1).
    pub fn quota_remaining(&self, scope: &str, limits: &crate::table::LimitsDoc, now: u64) -> f64 {
        let share = |used: u64, limit: u64| if limit == 0 { 1.0 } else { 1.0 - used.min(limit) as f64 / limit as f64 };
        let mut left: f64 = 1.0;
        let tokens_limited = limits.tokens_per_window > 0 || limits.tokens_per_day > 0;
        let counted = if tokens_limited { tokens_window(self, scope) } else { None };
        for (w, per_window, per_day) in [
            (self.windows.get(scope), u64::from(limits.requests_per_window), u64::from(limits.requests_per_day)),
            (counted, limits.tokens_per_window, limits.tokens_per_day),
        ] {
            let Some(w) = w else { continue };
            if now < w.start_ms.saturating_add(limits.window_ms) {
                left = left.min(share(u64::from(w.count), per_window));
            }
            if w.day_start_ms == limits.day_start_ms {
                left = left.min(share(u64::from(w.day_count), per_day));
            }
        }
        left
    }

    /// Count `tokens` a request on `scope` used, in its window and day. Always a change.
    pub fn count_tokens(&mut self, scope: &str, limits: &crate::table::LimitsDoc, tokens: u64, now: u64) -> bool {
        let n = u32::try_from(tokens).unwrap_or(u32::MAX);
        self.with_window(&tokens_key(scope), |w| add_to_window(w, limits, n, now));
        true
    }

    /// Count one request sent to `channel`. Always a change.
    pub fn count_request(&mut self, channel: &str, limits: &crate::table::LimitsDoc, now: u64) -> bool {
        self.with_window(channel, |w| add_to_window(w, limits, 1, now));
        true
    }

    /// The stricter of the channel's and the channel+model's verdicts.
    pub fn admit(&self, channel: &str, model: &str, now: u64, key_ok_ms: u64) -> Admit {
        let mut verdict = Admit::Yes;
        if self.entries.is_empty() {
            return verdict;
        }
        let scopes = [self.entries.get(channel), with_model_key(channel, model, |k| self.entries.get(k))];
        for h in scopes.into_iter().flatten() {
            match h.admit(now, key_ok_ms) {
                Admit::Yes => {}
                Admit::Probe => {
                    if verdict == Admit::Yes {
                        verdict = Admit::Probe;
                    }
                }
                no => return no,
            }
        }
        verdict
    }

    /// Scope of an outcome: key and reachability problems are the channel's;
    /// rate limits and server errors are often one model's (aggregators).
    pub fn scope_key(channel: &str, model: &str, class: Option<ErrorClass>) -> String {
        match class {
            Some(ErrorClass::KeyInvalid | ErrorClass::Unreachable) => channel_key(channel),
            _ => model_key(channel, model),
        }
    }

    /// Record an outcome; on success also clear the channel-wide entry's failure
    /// state (the channel answered). Returns whether anything changed.
    pub fn record(
        &mut self,
        channel: &str,
        model: &str,
        now: u64,
        class: Option<ErrorClass>,
        retry_after_ms: Option<u64>,
        policy: &Policy,
    ) -> bool {
        let before = self.clone();
        let keys = match class {
            None => vec![model_key(channel, model), channel_key(channel)],
            Some(_) => vec![Self::scope_key(channel, model, class)],
        };
        for key in keys {
            match self.entries.get_mut(&key) {
                Some(h) => {
                    // A success on another model does not clear an invalid key: a
                    // validation or a probe after `key_retry_ms` does.
                    if class.is_none() && h.reason == Reason::KeyInvalid && h.state == State::Open && now < h.until_ms {
                        continue;
                    }
                    h.record(now, class, retry_after_ms, policy);
                }
                None if class.is_some() && class != Some(ErrorClass::Client) => {
                    let mut h = Health::new(now);
                    h.record(now, class, retry_after_ms, policy);
                    self.entries.insert(key, h);
                }
                None => {}
            }
        }
        self.entries.retain(|_, h| h.is_interesting(now, policy));
        *self != before
    }

    /// Mark the half-open probe this request is about to make.
    pub fn start_probe(&mut self, channel: &str, model: &str, now: u64, policy: &Policy) {
        for key in [channel_key(channel), model_key(channel, model)] {
            if let Some(h) = self.entries.get_mut(&key) {
                if h.admit(now, 0) == Admit::Probe {
                    h.start_probe(now, policy);
                }
            }
        }
    }

    /// Whether this channel/model has any entry (so a success must be recorded).
    pub fn tracks(&self, channel: &str, model: &str) -> bool {
        !self.entries.is_empty()
            && (self.entries.contains_key(channel) || with_model_key(channel, model, |k| self.entries.contains_key(k)))
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("sarh1\n");
        for (k, h) in &self.entries {
            let state = match h.state {
                State::Closed => 'c',
                State::Open => 'o',
                State::HalfOpen => 'h',
            };
            let reason = match h.reason {
                Reason::None => '-',
                Reason::KeyInvalid => 'k',
                Reason::RateLimited => 'r',
                Reason::Failing => 'f',
            };
            s.push_str(&format!(
                "{state}{reason} {} {} {} {} {} {} {k}\n",
                h.since_ms, h.until_ms, h.window_start_ms, h.failures, h.successes, h.trips
            ));
        }
        for (channel, w) in &self.windows {
            s.push_str(&format!("w {} {} {} {} {channel}\n", w.start_ms, w.count, w.day_start_ms, w.day_count));
        }
        for (key, w) in &self.remote {
            s.push_str(&format!("r {} {} {key}\n", w.start_ms, w.count));
        }
        for (budget, b) in &self.spend {
            s.push_str(&format!("b {} {} {} {budget}\n", b.as_of_ms, b.settled_pico, b.reserved_pico));
        }
        s
    }

    /// Unreadable input gives an empty map: health is advisory, routing goes on.
    pub fn decode(text: &str) -> Self {
        let mut map = Self::default();
        let mut lines = text.lines();
        if lines.next() != Some("sarh1") {
            return map;
        }
        for line in lines {
            if let Some(rest) = line.strip_prefix("r ") {
                let mut parts = rest.splitn(3, ' ');
                let mut num = || parts.next().and_then(|n| n.parse::<u64>().ok());
                let (Some(start_ms), Some(count)) = (num(), num()) else { continue };
                if let Some(key) = parts.next() {
                    let count = u32::try_from(count).unwrap_or(u32::MAX);
                    map.remote.insert(key.to_string(), Window { start_ms, count, ..Window::default() });
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("b ") {
                let mut parts = rest.splitn(4, ' ');
                let mut num = || parts.next().and_then(|n| n.parse::<u64>().ok());
                let (Some(as_of_ms), Some(settled_pico), Some(reserved_pico)) = (num(), num(), num()) else {
                    continue;
                };
                if let Some(budget) = parts.next() {
                    map.spend.insert(budget.to_string(), Spend { as_of_ms, settled_pico, reserved_pico });
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("w ") {
                let mut parts = rest.splitn(5, ' ');
                let mut num = || parts.next().and_then(|n| n.parse::<u64>().ok());
                let (Some(start_ms), Some(count), Some(day_start_ms), Some(day_count)) = (num(), num(), num(), num())
                else {
                    continue;
                };
                let Some(channel) = parts.next() else { continue };
                let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
                map.windows.insert(
                    channel.to_string(),
                    Window { start_ms, count: small(count), day_start_ms, day_count: small(day_count) },
                );
                continue;
            }
            let mut parts = line.splitn(8, ' ');
            let Some(code) = parts.next() else { continue };
            let mut flags = code.chars();
            let state = match flags.next() {
                Some('o') => State::Open,
                Some('h') => State::HalfOpen,
                _ => State::Closed,
            };
            let reason = match flags.next() {
                Some('k') => Reason::KeyInvalid,
                Some('r') => Reason::RateLimited,
                Some('f') => Reason::Failing,
                _ => Reason::None,
            };
            let mut num = || parts.next().and_then(|n| n.parse::<u64>().ok());
            let (Some(since), Some(until), Some(win), Some(f), Some(s), Some(t)) =
                (num(), num(), num(), num(), num(), num())
            else {
                continue;
            };
            let Some(key) = parts.next() else { continue };
            map.entries.insert(
                key.to_string(),
                Health {
                    state,
                    reason,
                    since_ms: since,
                    until_ms: until,
                    window_start_ms: win,
                    failures: u32::try_from(f).unwrap_or(u32::MAX),
                    successes: u32::try_from(s).unwrap_or(u32::MAX),
                    trips: u32::try_from(t).unwrap_or(u32::MAX),
                },
            );
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        window_ms: 10_000,
        min_failures: 3,
        failure_ratio: 0.5,
        cooldown_ms: 1_000,
        max_cooldown_ms: 8_000,
        rate_limit_ms: 60_000,
        probe_timeout_ms: 5_000,
        key_retry_ms: 100_000,
    };

    #[test]
    fn classes() {
        assert_eq!(classify(200), None);
        assert_eq!(classify(401), Some(ErrorClass::KeyInvalid));
        assert_eq!(classify(403), Some(ErrorClass::KeyInvalid));
        assert_eq!(classify(429), Some(ErrorClass::RateLimited));
        assert_eq!(classify(503), Some(ErrorClass::Server));
        assert_eq!(classify(0), Some(ErrorClass::Unreachable));
        assert_eq!(classify(400), Some(ErrorClass::Client));
    }

    #[test]
    fn invalid_key_takes_the_whole_channel_out_until_validated() {
        let mut m = HealthMap::default();
        m.record("a", "m1", 1_000, classify(401), None, &P);
        assert_eq!(m.admit("a", "m2", 2_000, 0), Admit::No(Reason::KeyInvalid, u64::MAX));
        assert_eq!(m.admit("b", "m1", 2_000, 0), Admit::Yes);
        // Successes elsewhere on the channel do not clear it; a validation after does.
        m.record("a", "m1", 3_000, None, None, &P);
        assert_eq!(m.admit("a", "m1", 3_000, 999), Admit::No(Reason::KeyInvalid, u64::MAX));
        assert_eq!(m.admit("a", "m1", 3_000, 1_001), Admit::Yes);
    }

    #[test]
    fn rate_limit_rests_for_retry_after_on_that_model_only() {
        let mut m = HealthMap::default();
        m.record("a", "free-model", 10_000, classify(429), Some(2_000), &P);
        assert_eq!(m.admit("a", "free-model", 11_000, 0), Admit::No(Reason::RateLimited, 12_000));
        assert_eq!(m.admit("a", "paid-model", 11_000, 0), Admit::Yes);
        assert_eq!(m.admit("a", "free-model", 12_000, 0), Admit::Yes);
    }

    #[test]
    fn breaker_opens_on_ratio_probes_and_closes() {
        let mut m = HealthMap::default();
        let mut now = 0;
        // Half of the requests fail: the third failure trips it (3 of 6 >= 50%).
        for i in 0..6 {
            now += 10;
            let class = if i % 2 == 0 { classify(503) } else { None };
            m.record("a", "m", now, class, None, &P);
        }
        assert!(matches!(m.admit("a", "m", now, 0), Admit::No(Reason::Failing, _)), "{m:?}");
        now += 1_000;
        assert_eq!(m.admit("a", "m", now, 0), Admit::Probe);
        let mut h = m.entries[&model_key("a", "m")];
        h.start_probe(now, &P);
        m.entries.insert(model_key("a", "m"), h);
        assert!(matches!(m.admit("a", "m", now + 1, 0), Admit::No(..)), "one probe at a time");
        // The probe fails: open again, for twice as long.
        m.record("a", "m", now + 5, classify(502), None, &P);
        assert_eq!(m.admit("a", "m", now + 1_500, 0), Admit::No(Reason::Failing, now + 5 + 2_000));
        assert_eq!(m.admit("a", "m", now + 2_010, 0), Admit::Probe);
        // The next probe succeeds: closed, entry gone.
        m.record("a", "m", now + 2_020, None, None, &P);
        assert_eq!(m.admit("a", "m", now + 2_030, 0), Admit::Yes);
        assert!(m.entries.is_empty());
    }

    #[test]
    fn a_few_failures_do_not_open_a_busy_channel() {
        let mut m = HealthMap::default();
        for i in 0..100 {
            let class = if i % 10 == 0 { classify(500) } else { None };
            m.record("a", "m", i, class, None, &P);
        }
        assert_eq!(m.admit("a", "m", 100, 0), Admit::Yes);
    }

    #[test]
    fn unreachable_is_channel_wide() {
        let mut m = HealthMap::default();
        for t in 1..=3 {
            m.record("a", "m1", t, classify(0), None, &P);
        }
        assert!(matches!(m.admit("a", "m2", 4, 0), Admit::No(Reason::Failing, _)));
    }

    #[test]
    fn encoding_round_trips_and_tolerates_garbage() {
        let mut m = HealthMap::default();
        m.record("a", "qwen/qwen3:free", 5, classify(429), Some(1), &P);
        m.record("b", "x y", 5, classify(401), None, &P);
        let d = HealthMap::decode(&m.encode());
        assert_eq!(d, m);
        assert_eq!(HealthMap::decode("garbage\nok 1 2"), HealthMap::default());
        assert_eq!(HealthMap::decode("sarh1\nzz 1 2 3\nof x 1 2 3 4 5 k").entries.len(), 0);
    }
}
