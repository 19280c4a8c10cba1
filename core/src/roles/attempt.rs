//! The attempt role: the upstream filter Envoy runs once per attempt. It
//! rewrites the request for the channel the plan names for this attempt
//! (authority, path, key, the body's `model`, a stream's ask for its usage),
//! records how the attempt went (breakers, speed), turns a provider's
//! context-length 400 into a retriable 503, masks the channel's key in any error
//! body a provider sends back, and reads the answer's usage as it passes: a
//! JSON answer is held until its body is whole (it arrives right after its
//! headers) so it can carry `x-router-cost`; a stream is read event by event.
//!
//! All attempts of a request share one request-header map, so each rewrites from
//! the plan rather than from what it sees. The client's own credentials never
//! reach a provider: the route removes `authorization` and `x-api-key` before the
//! first attempt, and each attempt sets only its channel's key. An attempt that
//! cannot be prepared is answered here with an error, never sent as it is.

use std::ops::Deref;

use crate::cost::{usd_text, Price};
use crate::error::{mask_secret, RouterError};
use crate::flow::{self, CONTEXT_EXCEEDED_HEADER, FAILOVER_STATUSES};
use crate::health::{classify, is_context_length_error};
use crate::sse::{Edit, SseProcessor};
use crate::usage::{self, Usage};
use crate::wire::AttemptView;
use crate::Table;

use super::host::{Host, Shared, Step};
use super::live::{self, Outcome};
use super::router::entry_price;
use super::stats::Counter;

/// The response header carrying a JSON answer's cost in USD.
pub const COST_HEADER: &str = "x-router-cost";

/// How the attempt reads its response.
#[derive(Debug, Default)]
enum Reading {
    #[default]
    Nothing,
    /// A provider's 4xx, held until its body is whole (context length, key).
    Error(u16),
    /// A JSON answer, held until its body is whole (usage, cost header);
    /// whether the provider sent a cost header of its own (replaced, not doubled).
    Answer { provider_cost_header: bool },
    /// A stream, read as it passes.
    Stream(Box<SseProcessor>),
}

pub struct AttemptRole<T> {
    /// The body's edits for this attempt (its model, a stream's usage ask).
    edits: Vec<((usize, usize), String)>,
    /// This attempt's channel (its handle in `table`) and model.
    target: Option<(u32, String)>,
    table: Option<T>,
    /// Response headers arrived; without them the attempt ended unanswered.
    answered: bool,
    reading: Reading,
    /// The request streams, and whether its client asked for the usage event.
    stream: bool,
    client_usage: bool,
    /// Usage accounting is off: the answer passes unread.
    unaccounted: bool,
    /// The request body's length (a prompt estimate, when no usage comes back).
    body_len: usize,
    /// When this attempt left (ms), when it is timed.
    started_ms: Option<u64>,
    /// The request this attempt belongs to.
    request_id: u64,
}

impl<T> Default for AttemptRole<T> {
    fn default() -> Self {
        Self {
            edits: Vec::new(),
            target: None,
            table: None,
            answered: false,
            reading: Reading::Nothing,
            stream: false,
            client_usage: false,
            unaccounted: false,
            body_len: 0,
            started_ms: None,
            request_id: 0,
        }
    }
}

/// What went wrong preparing an attempt.
struct Unprepared {
    channel: Option<String>,
    error: RouterError,
}

impl<T: Deref<Target = Table> + Clone> AttemptRole<T> {
    pub fn on_request_headers<H>(&mut self, host: &mut H) -> Step
    where
        H: Host,
        H::Shared: Shared<Table = T>,
    {
        match self.prepare(host) {
            Ok(()) => Step::Continue,
            Err(u) => {
                // Answered here: Envoy 1.40 sends an upstream filter's reply to the
                // client (it does not retry it), so say clearly what happened.
                let shared = host.shared();
                if let Some(channel) = &u.channel {
                    shared.stats(|s| s.add(Counter::ChannelAttemptErrors, channel, 1));
                }
                log::warn!("smart-router: attempt not sent: {}", u.error.message);
                live::attempt_error(self.request_id);
                self.answered = true;
                host.send_reply(u.error.status, &[("content-type", "application/json")], &u.error.to_json());
                Step::Stop
            }
        }
    }

    fn prepare<H>(&mut self, host: &mut H) -> Result<(), Unprepared>
    where
        H: Host,
        H::Shared: Shared<Table = T>,
    {
        let internal = |message: &str| Unprepared {
            channel: None,
            error: RouterError::new(503, "service_unavailable", "channel_unavailable", message),
        };
        let table = host.shared().table().ok_or_else(|| internal("the router has no channel table"))?;
        let n = host.attempt_number().unwrap_or(1).max(1);
        let (rw, request_id, options, body_len) = {
            let text = host.plan_text().ok_or_else(|| internal("the request reached a channel without a plan"))?;
            let state = AttemptView::parse(&text).map_err(|_| internal("the attempt plan is unreadable"))?;
            self.request_id = state.request_id;
            let rw = flow::attempt_rewrite(&state, n, &table).map_err(|e| match e {
                flow::AttemptError::ChannelGone(id) => Unprepared {
                    error: RouterError::unavailable(
                        "channel_unavailable",
                        format!("channel {id} left the channel table while this request was in flight; send it again"),
                    ),
                    channel: Some(id.to_string()),
                },
                flow::AttemptError::Corrupt => internal("the attempt plan is unreadable"),
            })?;
            (rw, state.request_id, state.options, state.body_len)
        };
        self.stream = options.stream;
        self.client_usage = options.client_usage;
        self.unaccounted = options.unaccounted;
        self.body_len = body_len;
        host.set_request_header(":authority", Some(&rw.channel.authority));
        if let Some(path) = &rw.path {
            host.set_request_header(":path", Some(path));
        }
        if let Some((name, value)) = rw.auth {
            host.set_request_header(name, Some(value));
        }
        if let Some(len) = rw.content_length {
            host.set_request_header("content-length", Some(itoa::Buffer::new().format(len)));
        }
        let shared = host.shared();
        if let Some(limits) = rw.channel.limits {
            // A free tier's requests are counted as they are sent, in state every
            // worker shares, so the plan leaves the channel out at its limit.
            let now = shared.now_ms();
            shared.update_health(|h| h.count_request(&rw.channel.scope, &limits, now));
        }
        self.started_ms = live::should_time(shared, &rw.channel.scope, &rw.model).then(|| shared.now_ms());
        self.request_id = request_id;
        self.target = Some((rw.channel_handle, rw.model));
        self.edits = rw.edits;
        self.table = Some(table);
        Ok(())
    }

    pub fn on_request_body<H: Host>(&mut self, host: &mut H, end_of_stream: bool) -> Step {
        if self.edits.is_empty() {
            return Step::Continue;
        }
        if !end_of_stream {
            return Step::Stop;
        }
        if !host.edit_request_body(&self.edits) {
            log::error!("smart-router: could not rewrite the request body for its channel; sending it unchanged");
        }
        self.edits.clear();
        Step::Continue
    }

    pub fn on_response_headers<H>(&mut self, host: &mut H, end_of_stream: bool) -> Step
    where
        H: Host,
        H::Shared: Shared<Table = T>,
    {
        if self.answered {
            return Step::Continue;
        }
        self.answered = true;
        let (Some((handle, model)), Some(table)) = (&self.target, &self.table) else {
            return Step::Continue;
        };
        let Some(channel) = table.channel(*handle) else {
            return Step::Continue;
        };
        let status = flow::status_code(host.response_header(":status").as_deref());
        if (400..500).contains(&status) && !FAILOVER_STATUSES.contains(&status) && !end_of_stream {
            // The client gets this answer as it is, so its body is read first:
            // a context-length 400 should go to a channel with a larger context
            // (Envoy does not retry a 400), and a key the provider quotes back is
            // masked.
            self.reading = Reading::Error(status);
            return Step::Stop;
        }
        let class = classify(status);
        let retry_after =
            if status == 429 { flow::retry_after_ms(host.response_header("retry-after").as_deref()) } else { None };
        let shared = host.shared();
        live::record_health(shared, &channel.scope, model, class, retry_after, &table.routing.health);
        if class.is_none() && channel.limits.is_some_and(|l| l.provider_headers) {
            // The provider says this was the window's last request (or its
            // tokens are used up): rest until its reset rather than meet its 429.
            let spent = |(remaining, reset): (&'static str, &'static str)| {
                host.response_header(remaining).is_some_and(|v| v.trim() == "0").then_some(reset)
            };
            let requests = ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests");
            let tokens = ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens");
            if let Some(reset_header) = spent(requests).or_else(|| spent(tokens)) {
                let reset = host.response_header(reset_header).and_then(|v| flow::reset_ms(&v));
                let rest = Some(reset.unwrap_or(table.routing.health.rate_limit_ms));
                live::record_health(
                    host.shared(),
                    &channel.scope,
                    model,
                    Some(crate::health::ErrorClass::RateLimited),
                    rest,
                    &table.routing.health,
                );
            }
        }
        if crate::score::counts_for_speed(class) {
            let ttfb = self.started_ms.map(|t| shared.now_ms().saturating_sub(t) as f64);
            shared.add_perf(&channel.scope, model, class.is_none(), ttfb);
        }
        if !(200..300).contains(&status) || self.unaccounted {
            return Step::Continue;
        }
        // This attempt answers the request: what it used is the request's.
        live::report_outcome(self.request_id, Outcome { channel: *handle, model: model.clone(), ..Outcome::default() });
        if end_of_stream {
            live::update_outcome(self.request_id, |o| o.complete = true);
            return Step::Continue;
        }
        if self.stream {
            self.reading = Reading::Stream(Box::new(SseProcessor::new(self.client_usage)));
            return Step::Continue;
        }
        self.reading = Reading::Answer { provider_cost_header: host.response_header(COST_HEADER).is_some() };
        Step::Stop
    }

    pub fn on_response_body<H: Host>(&mut self, host: &mut H, end_of_stream: bool) -> Step {
        match &mut self.reading {
            Reading::Nothing => Step::Continue,
            Reading::Error(_) | Reading::Answer { .. } if !end_of_stream => Step::Stop,
            Reading::Error(status) => {
                let status = *status;
                self.reading = Reading::Nothing;
                self.error_body(host, status);
                Step::Continue
            }
            Reading::Answer { provider_cost_header } => {
                let replace = *provider_cost_header;
                self.reading = Reading::Nothing;
                let found = host.with_response_body(usage::from_json);
                let cost = self.price().zip(found).map(|(p, u)| p.cost(&u));
                if let Some(c) = cost {
                    // Adding is much cheaper in Envoy than setting (which first
                    // searches the whole map), and a provider rarely sends one.
                    if replace {
                        if !host.set_response_header(COST_HEADER, &usd_text(c)) {
                            log::warn!("smart-router: could not set {COST_HEADER}");
                        }
                    } else {
                        host.add_response_header(COST_HEADER, &usd_text(c));
                    }
                }
                live::update_outcome(self.request_id, |o| {
                    o.usage = found;
                    o.cost_pico = cost;
                    o.complete = true;
                });
                Step::Continue
            }
            Reading::Stream(sse) => {
                let price = self.target.as_ref().zip(self.table.as_ref()).and_then(|((h, m), t)| entry_price(t, *h, m));
                let prompt_estimate = (self.body_len as u64).div_ceil(4);
                let mut cost_comment = |p: &SseProcessor| {
                    let (usage, estimated) = match p.usage {
                        Some(u) => (u, false),
                        None => (
                            Usage { prompt_tokens: prompt_estimate, completion_tokens: p.events, ..Usage::default() },
                            true,
                        ),
                    };
                    let c = usd_text(price?.cost(&usage));
                    Some(if estimated { format!("{c} estimated") } else { c })
                };
                let edit = host.with_response_body(|chunk| sse.chunk(chunk, end_of_stream, &mut cost_comment));
                if let Edit::Replace(bytes) = edit {
                    if !host.replace_response_body(&bytes) {
                        log::error!("smart-router: could not edit a streamed answer");
                    }
                }
                let (found, events, done) = (sse.usage, sse.events, sse.done || end_of_stream);
                let cost = price.zip(found).map(|(p, u)| p.cost(&u));
                live::update_outcome(self.request_id, |o| {
                    o.usage = found;
                    o.events = events;
                    o.cost_pico = cost;
                    o.complete = done;
                });
                Step::Continue
            }
        }
    }

    /// A provider's whole 4xx body: a context-length 400 is made retriable;
    /// anything else goes to the client with the channel's key masked.
    fn error_body<H: Host>(&mut self, host: &mut H, status: u16) {
        if status == 400 && host.with_response_body(is_context_length_error) {
            // Retriable for Envoy, and marked so the router role can tell the
            // client what it means if no channel is left.
            if !(host.set_response_header(":status", "503") && host.set_response_header(CONTEXT_EXCEEDED_HEADER, "1")) {
                log::warn!("smart-router: could not mark a context-length error for failover");
            }
            return;
        }
        let secret =
            self.target.as_ref().zip(self.table.as_ref()).and_then(|((h, _), t)| t.channel(*h)).map(|c| c.secret());
        if let Some(masked) = secret.and_then(|s| host.with_response_body(|body| mask_secret(body, s))) {
            if !host.replace_response_body(&masked) {
                log::error!("smart-router: could not mask a provider key in an error body");
            }
        }
    }

    /// This attempt's price, when the table knows it.
    fn price(&self) -> Option<Price> {
        let ((handle, model), table) = self.target.as_ref().zip(self.table.as_ref())?;
        entry_price(table, *handle, model)
    }

    /// The attempt is over. Refused, reset or timed out before any response: the
    /// router role decides, when the request ends, whether that was the channel
    /// or the client leaving.
    pub fn on_done(&mut self) {
        if self.answered {
            return;
        }
        if let (Some((handle, model)), Some(table)) = (&self.target, &self.table) {
            if let Some(channel) = table.channel(*handle) {
                live::unanswered(self.request_id, &channel.scope, model);
            }
        }
    }
}
