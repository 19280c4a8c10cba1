//! The router role: the downstream filter, one per client request. It answers
//! listings, health and errors itself, buffers a chat request, plans its
//! attempts and hands the plan to Envoy; on the way back it adds the debug
//! headers, counts stats, and turns a failure that survived every attempt into
//! an OpenAI-shaped error naming the channels tried.

use std::borrow::Cow;
use std::ops::Deref;

use crate::error::RouterError;
use crate::flow::{self, Decision, HeadersVerdict, ResponseVerdict, CONTEXT_EXCEEDED_HEADER};
use crate::Table;

use super::host::{Host, Shared, Step};
use super::live;

const JSON: (&str, &str) = ("content-type", "application/json");

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
        }
    }

    fn reply<H: Host>(&mut self, host: &mut H, status: u16, headers: &[(&str, &str)], body: &str) -> Step {
        self.answered = true;
        let mut all = Vec::with_capacity(headers.len() + 1);
        all.push(JSON);
        all.extend_from_slice(headers);
        host.send_reply(status, &all, body);
        Step::Stop
    }

    fn fail<H: Host>(&mut self, host: &mut H, e: &RouterError) -> Step {
        self.reply(host, e.status, &[], &e.to_json())
    }

    pub fn on_request_headers<H>(&mut self, host: &mut H, end_of_stream: bool) -> Step
    where
        H: Host,
        H::Shared: Shared<Table = T>,
    {
        let table = host.shared().table();
        let (verdict, path) = {
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
            let path =
                if path == flow::CHAT_PATH { Cow::Borrowed(flow::CHAT_PATH) } else { Cow::Owned(path.into_owned()) };
            (verdict, path)
        };
        match verdict {
            HeadersVerdict::Reply(status, body) => self.reply(host, status, &[], &body),
            HeadersVerdict::WaitForBody => {
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
        let (max, path) = (self.max_body_bytes, &self.path);
        let routed = host.with_request_body(|body| {
            if body.len() > max {
                return Err(RouterError::too_large(max));
            }
            let shared = host.shared();
            // The clock matters only to channels with health state (a host call
            // saved on the common path).
            let now = if shared.health(|h| h.entries.is_empty()) { 0 } else { shared.now_ms() };
            let rotation = live::next_rotation();
            shared.health(|h| shared.perf(|p| flow::route_body(table, path, body, h, p, now, rotation)))
        });
        let routed = match routed {
            Ok(r) => r,
            Err(e) => return self.fail(host, &e),
        };
        live::start_probes(host.shared(), &routed.probes, &routed.decision.table.routing.health);
        if !host.deliver_plan(&routed.plan_text, routed.decision.clusters(), routed.retries) {
            return self.fail(
                host,
                &RouterError::new(500, "server_error", "internal_error", "could not hand the attempt plan to Envoy"),
            );
        }
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
        // The attempt side answered with its own error (see `AttemptRole`): it
        // stands as it is.
        if self.routed.as_ref().is_some_and(|(id, _)| live::take_attempt_error(*id)) {
            host.shared().stats(|s| s.request(&d.requested, &[], true));
            return Step::Continue;
        }
        let context_exceeded = status == 503 && host.response_header(CONTEXT_EXCEEDED_HEADER).is_some();
        let tried = host.attempts_made();
        let (verdict, outcome) = flow::on_response_headers(&d, status, context_exceeded, tried);
        host.shared().stats(|s| s.request(&d.requested, &outcome.channels, outcome.failed));
        match verdict {
            ResponseVerdict::Replace(status, headers, body) => {
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
    /// if it left. (Envoy ends this filter after the attempts when it answered,
    /// and before the attempt in flight when the client left; the ledger handles
    /// both.)
    pub fn on_done<S: Shared>(&mut self, shared: &S) {
        if let Some((id, table)) = self.routed.take() {
            live::forget_attempt_error(id);
            live::settle_unanswered(shared, id, self.responded, &table.routing.health);
        }
    }
}
