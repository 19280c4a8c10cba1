//! The router role: the downstream filter, one per client request. It answers
//! listings, health and errors itself, buffers a chat request, plans its
//! attempts and hands the plan to Envoy; on the way back it adds the debug
//! headers, counts stats, and turns a failure that survived every attempt into
//! an OpenAI-shaped error naming the channels tried. When a chat request ends,
//! however it ends, it makes the request's one usage record.

use std::borrow::Cow;
use std::ops::Deref;

use crate::error::RouterError;
use crate::flow::{self, Decision, HeadersVerdict, ResponseVerdict, CONTEXT_EXCEEDED_HEADER};
use crate::record::Record;
use crate::usage::Usage;
use crate::Table;

use super::host::{Host, Shared, Step};
use super::live;
use super::stats::Histogram;

const JSON: (&str, &str) = ("content-type", "application/json");

/// The status recorded for a request whose client left before any answer.
pub const CLIENT_CLOSED: u16 = 499;

pub struct RouterRole<T> {
    max_body_bytes: usize,
    /// Answered locally: the rest of the exchange has nothing to do.
    answered: bool,
    waiting_for_body: bool,
    /// The client's `:path`, kept from the headers (the usual one is not copied).
    path: Cow<'static, str>,
    decision: Option<Decision<T>>,
    /// The routed request's id and table, for its end (see `live::settle_unanswered`).
    routed: Option<(u64, T)>,
    /// The client got response headers (it did not leave first).
    responded: bool,
    /// A chat request's record, filled in as the request goes, made at its end.
    record: Option<Record>,
    started_ms: u64,
    /// What the record needs of the decision once the response has it.
    answered_by: Option<(u32, String)>,
    stream: bool,
    body_len: usize,
    /// The client token's id, when tokens are required.
    client: Option<String>,
    /// Held against budgets (index into the table's, picodollars) until the end.
    reserved: crate::plan::Reservation,
}

impl<T: Deref<Target = Table> + Clone> RouterRole<T> {
    pub fn new(max_body_bytes: usize) -> Self {
        Self {
            max_body_bytes,
            answered: false,
            waiting_for_body: false,
            path: Cow::Borrowed(""),
            decision: None,
            routed: None,
            responded: false,
            record: None,
            started_ms: 0,
            answered_by: None,
            client: None,
            reserved: Vec::new(),
            stream: false,
            body_len: 0,
        }
    }

    fn reply<H: Host>(&mut self, host: &mut H, status: u16, headers: &[(&str, &str)], body: &str) -> Step {
        self.answered = true;
        self.responded = true;
        let mut all = Vec::with_capacity(headers.len() + 1);
        all.push(JSON);
        all.extend_from_slice(headers);
        host.send_reply(status, &all, body);
        Step::Stop
    }

    fn fail<H: Host>(&mut self, host: &mut H, e: &RouterError) -> Step {
        if let Some(r) = &mut self.record {
            r.status = e.status;
            r.error = Some(e.code.to_string());
        }
        let wait = e.retry_after_s.map(|s| itoa::Buffer::new().format(s).to_string());
        match &wait {
            Some(s) => self.reply(host, e.status, &[("retry-after", s.as_str())], &e.to_json()),
            None => self.reply(host, e.status, &[], &e.to_json()),
        }
    }

    pub fn on_request_headers<H>(&mut self, host: &mut H, end_of_stream: bool) -> Step
    where
        H: Host,
        H::Shared: Shared<Table = T>,
    {
        let table = host.shared().table();
        let (verdict, path, chat) = {
            let path = host.request_header(":path").unwrap_or_default();
            let method = host.request_header(":method").unwrap_or_default();
            let verdict = flow::on_request_headers(
                table.as_deref(),
                &method,
                &path,
                end_of_stream,
                self.max_body_bytes,
                |name| host.request_header(name),
            );
            let chat = method == "POST" && path.split('?').next() == Some(flow::CHAT_PATH);
            let path =
                if path == flow::CHAT_PATH { Cow::Borrowed(flow::CHAT_PATH) } else { Cow::Owned(path.into_owned()) };
            (verdict, path, chat)
        };
        if chat && table.as_ref().is_none_or(|t| t.usage.enabled) {
            // Every chat request gets a record, answered here or not.
            let shared = host.shared();
            self.started_ms = shared.now_ms();
            self.record = Some(Record {
                id: shared.next_record_id(),
                ts_ms: self.started_ms,
                client: None,
                model_requested: None,
                model_used: None,
                channel: None,
                provider: None,
                stream: false,
                status: 0,
                attempts: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                cache_write_tokens: 0,
                reasoning_tokens: 0,
                cost_pico: None,
                latency_ms: 0,
                ttft_ms: None,
                usage_estimated: false,
                error: None,
            });
        }
        match verdict {
            HeadersVerdict::Reply(status, body) => self.reply(host, status, &[], &body),
            HeadersVerdict::Fail(e) => self.fail(host, &e),
            HeadersVerdict::WaitForBody { client } => {
                if let Some(r) = self.record.as_mut() {
                    r.client.clone_from(&client);
                }
                self.client = client;
                self.path = path;
                self.waiting_for_body = true;
                Step::Stop
            }
        }
    }

    pub fn on_request_body<H>(&mut self, host: &mut H, end_of_stream: bool) -> Step
    where
        H: Host,
        H::Shared: Shared<Table = T>,
    {
        if self.answered {
            return Step::Stop;
        }
        if !self.waiting_for_body {
            return Step::Continue;
        }
        if !end_of_stream {
            // Envoy's own buffer limit (the route's) answers 413 past it.
            return Step::Stop;
        }
        self.waiting_for_body = false;
        let Some(table) = host.shared().table() else {
            return self.fail(host, &RouterError::unavailable("table_not_loaded", "the router has no channel table"));
        };
        let (max, path, client) = (self.max_body_bytes, &self.path, self.client.as_deref());
        let routed = host.with_request_body(|body| {
            if body.len() > max {
                return Err(RouterError::too_large(max));
            }
            let shared = host.shared();
            // The clock matters only to channels with health state and budgets
            // (a host call saved on the common path); counts and spending must
            // be fresh.
            let counted = table.limited || table.tokens_limited || !table.budgets.is_empty();
            if counted {
                shared.sync_health();
            }
            let now = if shared.health(|h| h.is_empty()) && !counted { 0 } else { shared.now_ms() };
            let rotation = live::next_rotation();
            shared.health(|h| shared.perf(|p| flow::route_body(table, path, body, client, h, p, now, rotation)))
        });
        let routed = match routed {
            Ok(r) => r,
            Err(e) => {
                // The model, if the body named one, still goes in the record.
                if let Some(r) = &mut self.record {
                    r.model_requested =
                        host.with_request_body(|b| crate::request::parse_chat_head(b).ok().map(|h| h.model));
                }
                return self.fail(host, &e);
            }
        };
        live::start_probes(host.shared(), &routed.probes, &routed.decision.table.routing.health);
        if !host.deliver_plan(&routed.plan_text, routed.decision.clusters(), routed.retries) {
            return self.fail(
                host,
                &RouterError::new(500, "server_error", "internal_error", "could not hand the attempt plan to Envoy"),
            );
        }
        // Held only once the request goes (its end releases what it holds).
        live::hold(host.shared(), &routed.decision.table, &routed.reserved, self.client.as_deref());
        if let Some(r) = &mut self.record {
            r.model_requested = Some(routed.decision.requested.clone());
            r.stream = routed.decision.stream;
        }
        self.reserved = routed.reserved;
        self.stream = routed.decision.stream;
        self.body_len = routed.decision.body_len;
        self.routed = Some((routed.request_id, routed.decision.table.clone()));
        self.decision = Some(routed.decision);
        Step::Continue
    }

    pub fn on_response_headers<H: Host>(&mut self, host: &mut H) -> Step {
        if self.answered {
            return Step::Continue;
        }
        let Some(d) = self.decision.take() else {
            return Step::Continue;
        };
        self.responded = true;
        let status = flow::status_code(host.response_header(":status").as_deref());
        let tried = host.attempts_made();
        let ttft = host.shared().now_ms().saturating_sub(self.started_ms);
        let tried_n = tried.unwrap_or(1).clamp(1, d.attempts.len().max(1));
        self.answered_by = d.attempts.get(tried_n - 1).map(|a| (a.channel, a.upstream_model.clone()));
        if let Some(r) = &mut self.record {
            r.status = status;
            r.attempts = tried_n as u32;
            r.ttft_ms = Some(ttft);
        }
        // The attempt side answered with its own error (see `AttemptRole`): it
        // stands as it is.
        if self.routed.as_ref().is_some_and(|(id, _)| live::take_attempt_error(*id)) {
            host.shared().stats(|s| s.request(&d.requested, &[], true));
            if let Some(r) = &mut self.record {
                r.error = Some("channel_unavailable".into());
            }
            return Step::Continue;
        }
        let context_exceeded = status == 503 && host.response_header(CONTEXT_EXCEEDED_HEADER).is_some();
        let (verdict, outcome) = flow::on_response_headers(&d, status, context_exceeded, tried);
        host.shared().stats(|s| s.request(&d.requested, &outcome.channels, outcome.failed));
        match verdict {
            ResponseVerdict::Replace(status, headers, body) => {
                if let Some(r) = &mut self.record {
                    r.status = status;
                    r.error =
                        Some(if context_exceeded { "context_length_exceeded" } else { "all_channels_failed" }.into());
                }
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.reply(host, status, &headers, &body)
            }
            ResponseVerdict::Pass(debug) => {
                if let Some(debug) = debug {
                    debug.each(|name, value| host.add_response_header(name, value));
                }
                Step::Continue
            }
        }
    }

    /// The request is over: its unanswered attempts count against their
    /// channels if the client was still waiting (it got response headers), not
    /// if it left; and its record is made. (Envoy ends this filter after the
    /// attempts when it answered, and before the attempt in flight when the
    /// client left; the ledger handles both.)
    pub fn on_done<S: Shared<Table = T>>(&mut self, shared: &S) {
        let reserved = std::mem::take(&mut self.reserved);
        let mut held = None;
        let outcome = match self.routed.take() {
            Some((id, table)) => {
                live::forget_attempt_error(id);
                live::settle_unanswered(shared, id, self.responded, &table.routing.health);
                // Budgets and token limits count what the request used.
                if !table.budgets.is_empty() || table.tokens_limited {
                    held = Some(table.clone());
                }
                live::take_outcome(id).map(|o| (o, table))
            }
            None => None,
        };
        let Some(mut record) = self.record.take() else {
            if let Some(table) = held {
                live::release(shared, &table, &reserved, self.client.as_deref(), None);
            }
            return;
        };
        let now = shared.now_ms();
        record.latency_ms = now.saturating_sub(self.started_ms);
        if record.status == 0 {
            // The client left before any answer came.
            record.status = CLIENT_CLOSED;
            record.error.get_or_insert_with(|| "client_closed_request".into());
        }
        let answered = record.status < 400 && record.error.is_none();
        match outcome {
            Some((o, table)) => {
                self.describe_channel(&mut record, &table, o.channel, &o.model);
                let usage = o.usage.unwrap_or_else(|| {
                    record.usage_estimated = true;
                    self.estimate(o.events)
                });
                record.set_usage(&usage);
                record.cost_pico = match (o.cost_pico, o.usage.is_some()) {
                    (Some(c), true) => Some(c),
                    // An estimate is priced as the provider would have billed it.
                    _ => entry_price(&table, o.channel, &o.model).map(|p| p.cost(&usage)),
                };
                if answered && !o.complete {
                    record.error = Some("stream_interrupted".into());
                }
                live::count_channel_tokens(shared, &table, o.channel, usage.prompt_tokens + usage.completion_tokens);
                if let (Some(ch), Some(model)) = (&record.channel, &record.model_requested) {
                    let (cost, u) = (record.cost_pico, record.usage());
                    shared.stats(|s| {
                        s.usage(ch, model, &u, cost);
                        // A JSON answer's first token comes with its last, so only
                        // streams have a time to first token of their own.
                        if let Some(t) = record.ttft_ms.filter(|_| record.stream) {
                            s.sample(Histogram::ChannelTimeToFirstTokenMs, ch, t);
                        }
                    });
                }
            }
            None => {
                // No attempt reported back: an error answer, or a client that
                // left first. The prompt still counts if the request was routed.
                if let Some((handle, model)) = self.answered_by.take() {
                    if let Some(table) = shared.table() {
                        self.describe_channel(&mut record, &table, handle, &model);
                    }
                }
                if self.body_len > 0 && answered {
                    record.usage_estimated = true;
                    record.set_usage(&self.estimate(0));
                }
            }
        }
        if let Some(table) = held {
            let used = match (&record.channel, &record.model_requested) {
                (Some(channel), Some(model)) => Some(live::Used {
                    channel,
                    model,
                    cost_pico: record.cost_pico,
                    tokens: record.prompt_tokens.saturating_add(record.completion_tokens),
                }),
                _ => None,
            };
            live::release(shared, &table, &reserved, record.client.as_deref(), used);
        }
        shared.emit_record(record);
    }

    fn describe_channel(&self, record: &mut Record, table: &Table, handle: u32, model: &str) {
        if let Some(ch) = table.channel(handle) {
            record.channel = Some(ch.id.clone());
            record.provider = Some(ch.provider.clone());
        }
        record.model_used = Some(model.to_string());
    }

    /// Tokens the router counts itself: the request body (a fourth of its bytes,
    /// about a token each) and one completion token per streamed event.
    fn estimate(&self, events: u64) -> Usage {
        Usage { prompt_tokens: (self.body_len as u64).div_ceil(4), completion_tokens: events, ..Usage::default() }
    }
}

/// The price of `model` on channel `handle`, when the table knows it.
pub(crate) fn entry_price(table: &Table, handle: u32, model: &str) -> Option<crate::cost::Price> {
    table.entries_for_model(model).iter().filter_map(|&n| table.entry(n)).find(|e| e.channel == handle)?.price
}
