//! What the router does with one request, independent of how it is attached to
//! Envoy. Two shims call these functions: the proxy-wasm filter (portable, the
//! default) and the native dynamic module (faster). Each shim only reads what Envoy
//! has, calls in here, and applies the answer; every decision lives here, once.
//!
//! The downstream side runs [`on_request_headers`], then [`route_body`] once the
//! body is buffered, then [`on_response_headers`]. The per-attempt (upstream) side
//! runs [`attempt_rewrite`] for each attempt Envoy makes.

use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Deref;

use crate::error::ascii_safe;
use crate::health::HealthMap;
use crate::plan::{self, Live};
use crate::request::parse_chat_head;
use crate::score::PerfMap;
use crate::table::Channel;
use crate::wire::{encode_plan, model_literal, AttemptView, PlanHead, PlanOptions, UsageEdit};
use crate::{RouterError, Table};

/// The only endpoint routed to channels; the rest are answered by the router.
pub const CHAT_PATH: &str = "/v1/chat/completions";
/// Appended to a channel's path prefix (`https://host/api/v1` + this).
pub const ENDPOINT: &str = "/chat/completions";
/// Marks a 400 context-length error the attempt side turned into a retriable 503.
pub const CONTEXT_EXCEEDED_HEADER: &str = "x-sar-context-exceeded";

/// Statuses below 500 that Envoy retries on the next channel of the plan (as it
/// does every 5xx, a reset and a refused connection): a rejected key, a request
/// timeout and a rate limit are the channel's trouble, not the request's.
pub const FAILOVER_STATUSES: [u16; 4] = [401, 403, 408, 429];

/// Whether an attempt that answered `status` is failed over (0: no answer).
pub fn fails_over(status: u16) -> bool {
    status == 0 || status >= 500 || FAILOVER_STATUSES.contains(&status)
}

/// What to do after the request headers.
#[derive(Debug, PartialEq)]
pub enum HeadersVerdict {
    /// Answer locally with this status and JSON body.
    Reply(u16, String),
    /// Answer locally with this error.
    Fail(RouterError),
    /// A chat request: buffer the whole body, then call [`route_body`] with
    /// the client token's id (when tokens are required).
    WaitForBody { client: Option<String> },
}

impl HeadersVerdict {
    fn fail(e: &RouterError) -> Self {
        Self::Fail(e.clone())
    }
}

/// Decide on the request headers. `header` reads a request header; it is called
/// only for headers the decision needs (each read costs a host call in wasm).
pub fn on_request_headers<S: AsRef<str>>(
    table: Option<&Table>,
    method: &str,
    path: &str,
    end_of_stream: bool,
    max_body_bytes: usize,
    mut header: impl FnMut(&str) -> Option<S>,
) -> HeadersVerdict {
    let route = path.split('?').next().unwrap_or_default();
    let Some(table) = table else {
        return HeadersVerdict::fail(&RouterError::unavailable(
            "table_not_loaded",
            "the router has not received its channel table from the control plane yet",
        ));
    };
    if route == "/health" && method == "GET" {
        return HeadersVerdict::Reply(200, table.health_json().to_string());
    }
    let mut client = None;
    if table.auth.enabled {
        let authorization = header("authorization");
        let presented = match &authorization {
            Some(v) => client_token(v.as_ref()).map(str::to_string),
            None => header("x-api-key").map(|v| v.as_ref().trim().to_string()),
        };
        let Some(token) = presented.as_deref().and_then(|p| table.client_token(p)) else {
            return HeadersVerdict::fail(&RouterError::unauthorized(
                "missing or invalid router API token (Authorization: Bearer sar-...)",
            ));
        };
        client = Some(token.id.clone());
    }
    match (method, route) {
        ("GET", "/v1/models") => HeadersVerdict::Reply(200, table.models_json().to_string()),
        ("POST", CHAT_PATH) => {
            let declared = header("content-length").and_then(|v| v.as_ref().trim().parse::<usize>().ok());
            if declared.is_some_and(|n| n > max_body_bytes) {
                return HeadersVerdict::fail(&RouterError::too_large(max_body_bytes));
            }
            if end_of_stream {
                return HeadersVerdict::fail(&RouterError::bad_request(
                    "invalid_json",
                    "request body is empty; expected a JSON object",
                ));
            }
            HeadersVerdict::WaitForBody { client }
        }
        (_, "/v1/models" | "/health" | CHAT_PATH) => HeadersVerdict::fail(&RouterError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {route}"),
        )),
        _ => HeadersVerdict::fail(&RouterError::not_found_path(route)),
    }
}

/// The token in an `Authorization` value: `Bearer <token>` (the scheme in any
/// case, OpenAI's and RFC 6750's form) or the bare token. Another scheme
/// (`Basic ...`) is no token.
pub fn client_token(value: &str) -> Option<&str> {
    let v = value.trim();
    match v.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
        Some(_) => None,
        None => Some(v),
    }
}

/// Token comparison in constant time for tokens of one length, so a token
/// cannot be guessed byte by byte from how long a refusal takes.
pub fn same_secret(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// What the router decided for a chat request, kept for the response phase.
/// `T` is how the shim holds the table (`Rc` in a wasm VM, `Arc` natively).
pub struct Decision<T> {
    pub table: T,
    pub requested: String,
    pub attempts: Vec<plan::Attempt>,
    pub strategy: Cow<'static, str>,
    pub scores: Vec<f64>,
    /// A streaming request.
    pub stream: bool,
    /// The request body's length (the prompt estimate when no usage comes back).
    pub body_len: usize,
}

impl<T: Deref<Target = Table>> Decision<T> {
    /// Each attempt's Envoy cluster, in plan order (as in the plan text).
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.attempts.iter().filter_map(|a| self.table.channel(a.channel).map(|c| c.cluster.as_str()))
    }
}

/// A routed chat request: what to hand to Envoy.
pub struct Routed<T> {
    /// The plan as one text (an encoded `wire::AttemptState`), for the
    /// per-attempt side and the cluster choice.
    pub plan_text: String,
    /// Ties the attempts to their request (see the shims' unanswered ledgers).
    pub request_id: u64,
    /// Retries Envoy should make: one per attempt after the first.
    pub retries: usize,
    /// Half-open probes this request carries: (channel id, model).
    pub probes: Vec<(String, String)>,
    /// What the request holds against budgets until it ends.
    pub reserved: plan::Reservation,
    pub decision: Decision<T>,
}

/// Route a buffered chat body: parse `model`, plan the attempts, and describe the
/// per-attempt rewrites. `path` is the client's `:path`; `rotation` is unique per
/// request on this worker thread (it spreads ties and identifies the request to
/// its attempts).
#[allow(clippy::too_many_arguments)]
pub fn route_body<T: Deref<Target = Table>>(
    table: T,
    path: &str,
    body: &[u8],
    client: Option<&str>,
    health: &HealthMap,
    perf: &PerfMap,
    now_ms: u64,
    rotation: u64,
) -> Result<Routed<T>, RouterError> {
    let head = parse_chat_head(body)?;
    // The token was checked on the headers; a reload in between may have revoked it.
    let token = match client {
        Some(id) => Some(table.token_by_id(id).ok_or_else(|| {
            RouterError::unauthorized("the router API token was revoked while the request was in flight")
        })?),
        None => None,
    };
    if let Some((t, limits)) = token.and_then(|t| Some((t, t.limits?))) {
        over_rate_limit(health, t, &limits, now_ms)?;
    }
    if let Some(t) = token.filter(|t| !t.may_request(&head.model)) {
        return Err(RouterError::forbidden(format!(
            "token {} may not use model \"{}\"",
            t.id,
            crate::error::ascii_safe(&head.model, 200)
        )));
    }
    let size = plan::RequestSize {
        tools: head.tools,
        ..plan::RequestSize::of(body.len(), head.max_tokens, table.usage.reserve_output_tokens)
    };
    let planned = plan::plan(&table, &head.model, Live { health, perf, now_ms, rotation, token, size })?;
    let plan::Planned { plan, probes, strategy, scores, reserved, .. } = planned;
    let probes = probes
        .iter()
        .filter_map(|&i| plan.attempts.get(i))
        .filter_map(|a| table.channel(a.channel).map(|c| (c.scope.clone(), a.upstream_model.clone())))
        .collect();
    // Most channels live under `/v1`, as the client's path does: then no attempt
    // needs its `:path` rewritten.
    let keep_path = plan.attempts.iter().all(|a| {
        table.channel(a.channel).is_some_and(|c| {
            path.len() == c.path_prefix.len() + ENDPOINT.len()
                && path.starts_with(c.path_prefix.as_str())
                && path.ends_with(ENDPOINT)
        })
    });
    // A stream's usage comes in its last event, and only when asked for: each
    // attempt asks, whatever the client said (the router bills every request);
    // what the client did not ask for it does not get.
    let accounting = table.usage.enabled;
    let usage_edit = (accounting && head.stream && !head.include_usage).then(|| UsageEdit {
        span: head.stream_options_span.unwrap_or((head.object_start + 1, head.object_start + 1)),
    });
    let head_line = PlanHead {
        request_id: rotation,
        body_len: body.len(),
        model_span: head.model_span,
        endpoint: ENDPOINT,
        options: PlanOptions {
            keep_path,
            stream: head.stream,
            client_usage: head.include_usage,
            usage_edit,
            unaccounted: !accounting,
        },
        requested: &head.model,
    };
    let plan_text = encode_plan(
        &head_line,
        plan.attempts.iter().filter_map(|a| {
            let literal = model_literal(&head.model, &a.upstream_model);
            table.channel(a.channel).map(|ch| (ch.scope.as_str(), ch.cluster.as_str(), literal))
        }),
    );
    let retries = plan.attempts.iter().filter(|a| table.channel(a.channel).is_some()).count().saturating_sub(1);
    Ok(Routed {
        plan_text,
        request_id: rotation,
        retries,
        probes,
        reserved,
        decision: Decision {
            table,
            requested: head.model,
            attempts: plan.attempts,
            strategy,
            scores,
            stream: head.stream,
            body_len: body.len(),
        },
    })
}

/// A client token at one of its limits: 429 until the oldest window it
/// counts in ends.
fn over_rate_limit(
    health: &HealthMap,
    token: &crate::table::ClientToken,
    limits: &crate::table::TokenLimits,
    now_ms: u64,
) -> Result<(), RouterError> {
    let id = &token.id;
    let checks = [
        (limits.requests_per_window, &token.requests_key, "requests"),
        (limits.tokens_per_window, &token.tokens_key, "tokens"),
    ];
    for (limit, key, what) in checks {
        if limit == 0 {
            continue;
        }
        let (used, ends) = health.window_total(key, limits.window_ms, now_ms);
        if used >= u64::from(limit) {
            let wait_s = ends.saturating_sub(now_ms).div_ceil(1000).max(1);
            return Err(RouterError::rate_limited(
                format!(
                    "token {id} is over its limit of {limit} {what} per {} s; try again in {wait_s} s",
                    limits.window_ms.div_ceil(1000)
                ),
                wait_s,
            ));
        }
    }
    Ok(())
}

/// What to do with the final response headers.
#[derive(Debug, PartialEq)]
pub enum ResponseVerdict<'a> {
    /// Let the answer through, adding the debug headers when the table asks for
    /// them.
    Pass(Option<DebugHeaders<'a>>),
    /// Replace the answer: status, extra headers, JSON body.
    Replace(u16, Vec<(&'static str, String)>, String),
}

/// How a request ended, for stats.
pub struct Outcome<'a> {
    /// Channels tried, in order; the last one gave the final answer.
    pub channels: Vec<&'a str>,
    pub failed: bool,
}

/// Decide on the final response: `status` (0 when there is none), whether the
/// attempt side marked a context-length error, and Envoy's `x-envoy-attempt-count`.
pub fn on_response_headers<T: Deref<Target = Table>>(
    d: &Decision<T>,
    status: u16,
    context_exceeded: bool,
    attempt_count: Option<usize>,
) -> (ResponseVerdict<'_>, Outcome<'_>) {
    let tried = attempt_count.unwrap_or(1).clamp(1, d.attempts.len().max(1));
    // Envoy retries these; if one of them reaches us, every attempt of the plan
    // has failed.
    let failed = fails_over(status);
    let channels: Vec<&str> = d.attempts[..tried.min(d.attempts.len())]
        .iter()
        .filter_map(|a| d.table.channel(a.channel).map(|c| c.id.as_str()))
        .collect();
    // The last attempt's context-length 400, turned into a 503 so Envoy would try a
    // larger context: no channel is left, so the client gets the 400 it means.
    if context_exceeded && status == 503 {
        let e = RouterError::bad_request(
            "context_length_exceeded",
            format!(
                "the request does not fit the context of any channel tried for model \"{}\": {}",
                ascii_safe(&d.requested, 200),
                channels.join(", ")
            ),
        );
        return (
            ResponseVerdict::Replace(e.status, vec![("x-router-attempts", tried.to_string())], e.to_json()),
            Outcome { channels, failed: true },
        );
    }
    if failed {
        let e = RouterError::unavailable(
            "all_channels_failed",
            format!(
                "all channels failed for model \"{}\": tried {} (last answer: {})",
                ascii_safe(&d.requested, 200),
                channels.join(", "),
                if status == 0 { "no response".to_string() } else { status.to_string() }
            ),
        );
        return (
            ResponseVerdict::Replace(e.status, vec![("x-router-attempts", tried.to_string())], e.to_json()),
            Outcome { channels, failed: true },
        );
    }
    let debug = d.table.routing.debug_headers.then(|| DebugHeaders {
        channel: d.attempts.get(tried - 1).and_then(|last| {
            let ch = d.table.channel(last.channel)?;
            Some((ch.id.as_str(), ascii_clean(&ch.provider, 64), ascii_clean(&last.upstream_model, 200)))
        }),
        key: d.attempts.get(tried - 1).and_then(|last| d.table.channel(last.channel)?.key.as_deref()),
        attempts: tried,
        score: d.scores.get(tried - 1).copied(),
        strategy: ascii_clean(&d.strategy, 64),
    });
    (ResponseVerdict::Pass(debug), Outcome { channels, failed: false })
}

/// The `x-router-*` headers of a routed answer, as data; [`DebugHeaders::each`]
/// writes them out. Values are borrowed from the decision where they need no
/// cleaning, and numbers are formatted on the stack: this runs on every answer.
#[derive(Debug, PartialEq)]
pub struct DebugHeaders<'a> {
    /// The channel that answered: its id, provider and the model it was asked for.
    pub channel: Option<(&'a str, Cow<'a, str>, Cow<'a, str>)>,
    /// The key's id, when the channel has several.
    pub key: Option<&'a str>,
    pub attempts: usize,
    pub score: Option<f64>,
    pub strategy: Cow<'a, str>,
}

impl DebugHeaders<'_> {
    /// Call `add` with each header's name and value, in a fixed order.
    pub fn each(&self, mut add: impl FnMut(&'static str, &str)) {
        if let Some((id, provider, model)) = &self.channel {
            add("x-router-channel", id);
            add("x-router-provider", provider);
            add("x-router-model", model);
        }
        if let Some(key) = self.key {
            add("x-router-key", key);
        }
        add("x-router-attempts", itoa::Buffer::new().format(self.attempts));
        if let Some(score) = self.score {
            add("x-router-score", &fixed4(score));
        }
        add("x-router-strategy", &self.strategy);
    }
}

/// [`ascii_safe`] without a copy when `s` is already plain.
fn ascii_clean(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(ascii_safe(s, max))
    }
}

/// `x` with four decimals, as `format!("{x:.4}")` writes a score (scores are
/// already rounded to four decimals), without float formatting or an allocation
/// on every response.
fn fixed4(x: f64) -> StackText {
    let mut out = StackText::default();
    if !x.is_finite() || x.abs() >= 1e12 || x < 0.0 {
        let _ = write!(out, "{x:.4}");
        return out;
    }
    // (`as` truncates: adding a half rounds a non-negative value without the
    // library call `f64::round` costs.)
    let scaled = (x * 10_000.0 + 0.5) as u64;
    let _ = out.write_str(itoa::Buffer::new().format(scaled / 10_000));
    let frac = scaled % 10_000;
    let _ = out.write_str(".");
    for digit in [frac / 1000, frac / 100 % 10, frac / 10 % 10, frac % 10] {
        let _ = out.write_char(char::from(b'0' + digit as u8));
    }
    out
}

/// A short text kept on the stack (a formatted number); what does not fit is
/// cut off at a character boundary.
#[derive(Default)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl std::ops::Deref for StackText {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        if let (Some(to), Some(from)) = (self.bytes.get_mut(self.len..self.len + take), s.as_bytes().get(..take)) {
            to.copy_from_slice(from);
            self.len += take;
        }
        if take < s.len() {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

/// One attempt's changes to the request, for the channel Envoy is about to try.
pub struct AttemptPlan<'t> {
    pub channel: &'t Channel,
    /// The channel's handle in the table (`Table::channel`).
    pub channel_handle: u32,
    /// New `:path`, when the channel's differs from the client's.
    pub path: Option<String>,
    /// The channel's key header and value, if it has a key.
    pub auth: Option<(&'t str, &'t str)>,
    /// New `content-length`, when any attempt of the plan changes the body's length
    /// (all attempts share one header map, so each sets its own).
    pub content_length: Option<usize>,
    /// Byte ranges of the body and what to put there, in body order: the model's
    /// value for this channel, and the ask for a stream's usage event.
    pub edits: Vec<((usize, usize), String)>,
    /// The model this attempt asks the channel for (health and speed are per model).
    pub model: String,
}

/// Why an attempt cannot be prepared.
#[derive(Debug, PartialEq, Eq)]
pub enum AttemptError<'a> {
    /// The plan names a channel the current table no longer has (a reload
    /// removed it while the request was in flight).
    ChannelGone(&'a str),
    /// The plan is empty or unreadable.
    Corrupt,
}

/// The rewrites for attempt `number` (Envoy counts from 1). Past the end of the
/// plan the cluster specifier repeats the last group, and so does this.
pub fn attempt_rewrite<'t, 'p>(
    state: &AttemptView<'p>,
    number: usize,
    table: &'t Table,
) -> Result<AttemptPlan<'t>, AttemptError<'p>> {
    let rewrite = state.attempt(number).ok_or(AttemptError::Corrupt)?;
    let (channel_handle, channel) =
        table.channel_by_scope(rewrite.channel_id).ok_or(AttemptError::ChannelGone(rewrite.channel_id))?;
    let model = match rewrite.model_literal {
        Some(lit) => crate::wire::json_string(lit),
        None => state.requested(),
    }
    .ok_or(AttemptError::Corrupt)?;
    Ok(AttemptPlan {
        channel,
        channel_handle,
        path: (!state.options.keep_path).then(|| format!("{}{}", channel.path_prefix, state.endpoint)),
        auth: (!channel.auth_header.is_empty()).then_some((channel.auth_header.as_str(), channel.auth_value.as_str())),
        content_length: state.changes_length().then(|| state.body_len_for(&rewrite)),
        edits: state.edits_for(&rewrite).into_iter().map(|(span, lit)| (span, lit.to_string())).collect(),
        model,
    })
}

/// `body` with each edit's byte range replaced by its text (an attempt's
/// `edits`, in body order, not overlapping); `None` when the body is shorter
/// than an edit's range.
pub fn edited<S: AsRef<str>>(body: &[u8], edits: &[((usize, usize), S)]) -> Option<Vec<u8>> {
    let end = edits.last().map_or(0, |((_, end), _)| *end);
    let mut out = Vec::with_capacity(body.len() + edits.iter().map(|(_, lit)| lit.as_ref().len()).sum::<usize>());
    out.extend_from_slice(&edited_prefix(body.get(..end)?, edits)?);
    out.extend_from_slice(body.get(end..)?);
    Some(out)
}

/// The first bytes of a body (through the last edit's range) with the edits
/// made: what replaces that prefix (the wasm host can replace a body only from
/// its start).
pub fn edited_prefix<S: AsRef<str>>(prefix: &[u8], edits: &[((usize, usize), S)]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(prefix.len() + 64);
    let mut at = 0;
    for ((start, end), literal) in edits {
        if *start < at || end < start {
            return None;
        }
        out.extend_from_slice(prefix.get(at..*start)?);
        out.extend_from_slice(literal.as_ref().as_bytes());
        at = *end;
    }
    out.extend_from_slice(prefix.get(at..)?);
    Some(out)
}

/// A `:status` header's code; 0 when absent or not a number (treated as no answer).
pub fn status_code(value: Option<&str>) -> u16 {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// `Retry-After` in milliseconds: delta seconds (an HTTP date is not parsed and
/// falls back to the policy's default rest).
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).min(86_400_000.0) as u64)
}

/// A provider's rate-limit reset (`x-ratelimit-reset-requests`) in ms: Go-style
/// durations as OpenAI and Groq send them (`1s`, `6m0s`, `2m59.56s`, `20ms`,
/// `1h2m`), or plain seconds. At most a day.
pub fn reset_ms(value: &str) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).min(86_400_000.0) as u64);
    }
    let mut total = 0.0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let unit = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match rest.get(..unit)? {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            _ => return None,
        };
        rest = rest.get(unit..)?;
        total += n * scale;
    }
    (total.is_finite() && !v.is_empty()).then(|| total.min(86_400_000.0) as u64)
}

/// Attempts that ended without any response (refused, reset, timed out), held
/// until their request ends. They count against the channel only if the client
/// was still there to get an answer: a client that gives up before the first byte
/// (a timeout on a slow provider, a load generator stopping mid-request) resets
/// the attempt too, and that says nothing about the channel.
///
/// Envoy runs every filter of a request on one worker thread, so each shim keeps
/// one ledger per thread, keyed by the request id in the attempt state. When the
/// client leaves first, Envoy destroys the request's filters before the attempt's:
/// the request is then remembered as abandoned and its late attempt dropped.
#[derive(Default)]
pub struct UnansweredLedger {
    pending: hashbrown::HashMap<u64, Vec<(String, String)>>,
    abandoned: hashbrown::HashSet<u64>,
}

impl UnansweredLedger {
    /// Bound on requests tracked per thread (a leak guard, should a request's end
    /// never be seen).
    const MAX_REQUESTS: usize = 4096;

    /// An attempt of request `request_id` to `channel`/`model` ended without a response.
    pub fn add(&mut self, request_id: u64, channel: &str, model: &str) {
        if self.abandoned.remove(&request_id) {
            return;
        }
        if self.pending.len() >= Self::MAX_REQUESTS && !self.pending.contains_key(&request_id) {
            self.pending.clear();
        }
        self.pending.entry(request_id).or_default().push((channel.to_string(), model.to_string()));
    }

    /// Request `request_id` has ended: its unanswered attempts (channel, model) if
    /// the client got a response, none if it left first.
    pub fn take(&mut self, request_id: u64, responded: bool) -> Vec<(String, String)> {
        // (Nearly every attempt is answered: then there is nothing to look up.)
        let taken =
            if self.pending.is_empty() { Vec::new() } else { self.pending.remove(&request_id).unwrap_or_default() };
        if responded {
            return taken;
        }
        if self.abandoned.len() >= Self::MAX_REQUESTS {
            self.abandoned.clear();
        }
        self.abandoned.insert(request_id);
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{channel, doc};

    fn table() -> Table {
        let mut b = channel("b", 2, &["vendor/m"]);
        b.path_prefix = "/api/v1".into();
        b.auth_header = "x-api-key".into();
        b.auth_value = "key-b".into();
        let mut d = doc(vec![channel("a", 1, &["m"]), b]);
        d.channels[1].aliases.insert("m".into(), "vendor/m".into());
        Table::compile(d, None).unwrap()
    }

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn request_headers_answer_listings_and_errors_and_wait_for_chat_bodies() {
        let t = table();
        let reply = |method: &str, path: &str| on_request_headers(Some(&t), method, path, false, 100, no_headers);
        assert!(matches!(reply("GET", "/health"), HeadersVerdict::Reply(200, _)));
        assert!(matches!(reply("GET", "/v1/models?x=1"), HeadersVerdict::Reply(200, _)));
        assert_eq!(reply("POST", "/v1/chat/completions"), HeadersVerdict::WaitForBody { client: None });
        assert!(matches!(reply("GET", "/v1/chat/completions"), HeadersVerdict::Fail(ref e) if e.status == 405));
        assert!(matches!(reply("POST", "/v2/nothing"), HeadersVerdict::Fail(ref e) if e.status == 404));
        let none = on_request_headers(None, "POST", CHAT_PATH, false, 100, no_headers);
        assert!(matches!(none, HeadersVerdict::Fail(ref e) if e.code == "table_not_loaded"));
        let big = on_request_headers(Some(&t), "POST", CHAT_PATH, false, 100, |h| {
            (h == "content-length").then(|| "101".to_string())
        });
        assert!(matches!(big, HeadersVerdict::Fail(ref e) if e.status == 413));
        let empty = on_request_headers(Some(&t), "POST", CHAT_PATH, true, 100, no_headers);
        assert!(matches!(empty, HeadersVerdict::Fail(ref e) if e.status == 400));
    }

    #[test]
    fn scores_print_with_four_decimals() {
        for x in [0.0, 0.5, 0.12345, 0.99999, 1.0, 0.0001, 2.25, 123.4567, -0.5, f64::NAN, 1e300, -1e300] {
            assert_eq!(&*fixed4(x), format!("{x:.4}").get(..32).unwrap_or(&format!("{x:.4}")), "{x}");
        }
    }

    #[test]
    fn router_tokens_are_checked_only_when_auth_is_on() {
        let mut d = doc(vec![channel("a", 1, &["m"])]);
        d.auth.enabled = true;
        d.auth.tokens = vec![token("one", "sar-1")];
        let t = Table::compile(d, None).unwrap();
        let with = |auth: Option<&str>| {
            on_request_headers(Some(&t), "GET", "/v1/models", false, 100, |h| {
                (h == "authorization").then(|| auth.map(str::to_string)).flatten()
            })
        };
        assert!(matches!(with(Some("Bearer sar-1")), HeadersVerdict::Reply(200, _)));
        assert!(matches!(with(Some("bearer  sar-1 ")), HeadersVerdict::Reply(200, _)));
        assert!(matches!(with(Some("sar-1")), HeadersVerdict::Reply(200, _)));
        assert!(matches!(with(Some("Basic sar-1")), HeadersVerdict::Fail(ref e) if e.status == 401));
        assert!(matches!(with(Some("Bearer nope")), HeadersVerdict::Fail(ref e) if e.status == 401));
        assert!(matches!(with(None), HeadersVerdict::Fail(ref e) if e.status == 401));
        // /health stays open for probes.
        let health = on_request_headers(Some(&t), "GET", "/health", false, 100, no_headers);
        assert!(matches!(health, HeadersVerdict::Reply(200, _)));
    }

    #[test]
    fn provider_resets_read_as_go_durations_or_seconds() {
        for (text, ms) in [
            ("1s", 1000),
            ("6m0s", 360_000),
            ("2m59.56s", 179_560),
            ("20ms", 20),
            ("1h2m", 3_720_000),
            ("7", 7000),
            ("0.5", 500),
        ] {
            assert_eq!(reset_ms(text), Some(ms), "{text}");
        }
        for bad in ["", "soon", "5x", "-1"] {
            assert_eq!(reset_ms(bad), None, "{bad}");
        }
    }

    fn token(id: &str, secret: &str) -> crate::table::TokenDoc {
        crate::table::TokenDoc { id: id.into(), sha256: crate::table::token_hash_hex(secret), ..Default::default() }
    }

    #[test]
    fn a_token_reaches_only_what_its_rules_allow() {
        let mut free = channel("free", 1, &["m", "n"]);
        free.tags = vec!["free".into()];
        let mut d = doc(vec![free, channel("paid", 2, &["m", "p"])]);
        d.auth.enabled = true;
        d.auth.tokens = vec![
            crate::table::TokenDoc { tags: vec!["free".into()], ..token("a", "sar-a") },
            crate::table::TokenDoc { models: vec!["p".into()], ..token("b", "sar-b") },
            crate::table::TokenDoc { channels: vec!["paid".into()], ..token("c", "sar-c") },
            token("all", "sar-all"),
        ];
        let t = Table::compile(d, None).unwrap();
        let client = |secret: &str| match on_request_headers(Some(&t), "POST", CHAT_PATH, false, 100, |h| {
            (h == "authorization").then(|| format!("Bearer {secret}"))
        }) {
            HeadersVerdict::WaitForBody { client } => client,
            other => panic!("{other:?}"),
        };
        assert_eq!(client("sar-a").as_deref(), Some("a"));
        let route = |id: &str, model: &str| {
            let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
            route_body(&t, CHAT_PATH, body.as_bytes(), Some(id), &HealthMap::default(), &PerfMap::default(), 0, 1)
        };
        let channels = |r: Result<Routed<&Table>, RouterError>| -> Vec<String> {
            let r = r.unwrap();
            let state = crate::wire::AttemptState::decode(&r.plan_text).unwrap();
            state.attempts.iter().map(|a| a.cluster.clone()).collect()
        };
        // Only free: by name, by tag, by a query that names the paid channel's model.
        assert_eq!(channels(route("a", "m")), ["channel_free"]);
        assert_eq!(channels(route("a", "tag:free")), ["channel_free", "channel_free"]);
        let e = route("a", "p").err().unwrap();
        assert_eq!((e.status, e.code), (403, "model_not_allowed"));
        // Only model p, wherever it is.
        assert_eq!(channels(route("b", "p")), ["channel_paid"]);
        assert_eq!(route("b", "m").err().unwrap().status, 403);
        // Only the paid channel.
        assert_eq!(channels(route("c", "m")), ["channel_paid"]);
        assert_eq!(route("c", "n").err().unwrap().status, 403);
        assert_eq!(channels(route("all", "m")), ["channel_free", "channel_paid"]);
        // A token revoked between the headers and the body.
        assert_eq!(route("gone", "m").err().unwrap().status, 401);
    }

    #[test]
    fn a_routed_body_describes_every_attempt_and_its_rewrites() {
        let t = table();
        let body = br#"{"model":"m","messages":[]}"#;
        let r = route_body(&t, CHAT_PATH, body, None, &HealthMap::default(), &PerfMap::default(), 0, 1).unwrap();
        let state = crate::wire::AttemptState::decode(&r.plan_text).unwrap();
        let clusters: Vec<&str> = state.attempts.iter().map(|a| a.cluster.as_str()).collect();
        assert_eq!(clusters, vec!["channel_a", "channel_b"]);
        assert_eq!(r.retries, 1);
        assert_eq!(r.request_id, 1);
        assert!(!state.options.keep_path, "channel b lives under /api/v1");
        assert_eq!(state.attempts[1].model_literal.as_deref(), Some("\"vendor/m\""));
        assert_eq!(state.encode(), r.plan_text, "the owned state encodes the same text");

        let view = AttemptView::parse(&r.plan_text).unwrap();
        let first = attempt_rewrite(&view, 1, &t).unwrap();
        assert_eq!(first.channel.id, "a");
        assert_eq!(first.path.as_deref(), Some("/v1/chat/completions"));
        assert_eq!(first.auth, Some(("authorization", "Bearer key-a")));
        assert!(first.edits.is_empty());
        assert_eq!(first.content_length, Some(body.len()), "another attempt changes the length");

        let second = attempt_rewrite(&view, 2, &t).unwrap();
        assert_eq!(second.channel.id, "b");
        assert_eq!(second.path.as_deref(), Some("/api/v1/chat/completions"));
        assert_eq!(second.auth, Some(("x-api-key", "key-b")));
        assert_eq!(second.model, "vendor/m");
        let rewritten = edited(body, &second.edits).unwrap();
        assert_eq!(rewritten, br#"{"model":"vendor/m","messages":[]}"#);
        assert_eq!(second.content_length, Some(rewritten.len()));
        assert_eq!(edited(b"{}", &second.edits), None, "a short body is left alone");

        // Past the plan, Envoy's specifier repeats the last group; so does the rewrite.
        assert_eq!(attempt_rewrite(&view, 7, &t).unwrap().channel.id, "b");
        assert!(route_body(&t, CHAT_PATH, b"{}", None, &HealthMap::default(), &PerfMap::default(), 0, 1).is_err());
    }

    #[test]
    fn final_responses_pass_with_debug_headers_or_become_openai_errors() {
        let t = table();
        let body = br#"{"model":"m"}"#;
        let d =
            route_body(&t, CHAT_PATH, body, None, &HealthMap::default(), &PerfMap::default(), 0, 1).unwrap().decision;

        let (v, o) = on_response_headers(&d, 200, false, Some(2));
        assert_eq!(o.channels, vec!["a", "b"]);
        assert!(!o.failed);
        let ResponseVerdict::Pass(Some(debug)) = v else { panic!("expected pass") };
        let mut add = Vec::new();
        debug.each(|k, v| add.push((k, v.to_string())));
        assert!(add.contains(&("x-router-channel", "b".to_string())));
        assert!(add.contains(&("x-router-attempts", "2".to_string())));
        assert_eq!(add.len(), 6, "{add:?}");

        let (v, o) = on_response_headers(&d, 503, false, Some(2));
        assert!(o.failed);
        assert!(matches!(v, ResponseVerdict::Replace(503, _, ref b) if b.contains("all_channels_failed")));
        let (v, _) = on_response_headers(&d, 503, true, Some(2));
        assert!(matches!(v, ResponseVerdict::Replace(400, _, ref b) if b.contains("context_length_exceeded")));
        // A client error is the client's answer, passed on.
        let (v, o) = on_response_headers(&d, 400, false, None);
        assert!(matches!(v, ResponseVerdict::Pass(_)));
        assert_eq!(o.channels, vec!["a"]);
    }

    #[test]
    fn retry_after_is_delta_seconds() {
        assert_eq!(retry_after_ms(Some(" 2 ")), Some(2000));
        assert_eq!(retry_after_ms(Some("0.5")), Some(500));
        assert_eq!(retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after_ms(Some("-1")), None);
        assert_eq!(retry_after_ms(None), None);
    }

    #[test]
    fn unanswered_attempts_count_only_when_the_client_got_an_answer() {
        let mut l = UnansweredLedger::default();
        l.add(1, "a", "m");
        l.add(1, "b", "m");
        assert_eq!(l.take(1, true), vec![("a".to_string(), "m".to_string()), ("b".to_string(), "m".to_string())]);
        assert!(l.take(1, true).is_empty(), "taken once");
        // The client left: what is there is dropped, and so is a late attempt.
        l.add(2, "a", "m");
        assert!(l.take(2, false).is_empty());
        l.add(3, "a", "m");
        assert!(l.take(3, false).is_empty());
        l.add(3, "a", "m");
        assert!(l.pending.is_empty(), "late attempt dropped");
        assert!(!l.abandoned.contains(&3), "and forgotten");
    }
}
