//! The attempt role: the upstream filter Envoy runs once per attempt. It
//! rewrites the request for the channel the plan names for this attempt
//! (authority, path, key, the body's `model`), records how the attempt went
//! (breakers, speed), turns a provider's context-length 400 into a retriable
//! 503, and masks the channel's key in any error body a provider sends back.
//!
//! All attempts of a request share one request-header map, so each rewrites from
//! the plan rather than from what it sees. The client's own credentials never
//! reach a provider: the route removes `authorization` and `x-api-key` before the
//! first attempt, and each attempt sets only its channel's key. An attempt that
//! cannot be prepared is answered here with an error, never sent as it is.

use std::ops::Deref;

use crate::error::{mask_secret, RouterError};
use crate::flow::{self, CONTEXT_EXCEEDED_HEADER, FAILOVER_STATUSES};
use crate::health::{classify, is_context_length_error};
use crate::wire::AttemptView;
use crate::Table;

use super::host::{Host, Shared, Step};
use super::live;
use super::stats::Counter;

pub struct AttemptRole<T> {
    /// The model's span in the body and the literal to put there, when this
    /// attempt changes `model`.
    splice: Option<((usize, usize), String)>,
    /// This attempt's channel (its handle in `table`) and model.
    target: Option<(u32, String)>,
    table: Option<T>,
    /// Response headers arrived; without them the attempt ended unanswered.
    answered: bool,
    /// A provider's 4xx held back until its body is read (context length, key).
    held: Option<u16>,
    /// When this attempt left (ms), when it is timed.
    started_ms: Option<u64>,
    /// The request this attempt belongs to.
    request_id: u64,
}

impl<T> Default for AttemptRole<T> {
    fn default() -> Self {
        Self { splice: None, target: None, table: None, answered: false, held: None, started_ms: None, request_id: 0 }
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
        let (rw, request_id) = {
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
            (rw, state.request_id)
        };
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
        self.started_ms = live::should_time(shared, &rw.channel.id, &rw.model).then(|| shared.now_ms());
        self.request_id = request_id;
        self.target = Some((rw.channel_handle, rw.model));
        self.splice = rw.splice;
        self.table = Some(table);
        Ok(())
    }

    pub fn on_request_body<H: Host>(&mut self, host: &mut H, end_of_stream: bool) -> Step {
        let Some((span, literal)) = &self.splice else {
            return Step::Continue;
        };
        if !end_of_stream {
            return Step::Stop;
        }
        if !host.splice_request_body(*span, literal) {
            log::error!("smart-router: could not rewrite the request body's model; sending it unchanged");
        }
        self.splice = None;
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
            // masked. Only error answers wait; the rest pass at once.
            self.held = Some(status);
            return Step::Stop;
        }
        let class = classify(status);
        let retry_after =
            if status == 429 { flow::retry_after_ms(host.response_header("retry-after").as_deref()) } else { None };
        let shared = host.shared();
        live::record_health(shared, &channel.id, model, class, retry_after, &table.routing.health);
        if crate::score::counts_for_speed(class) {
            let ttfb = self.started_ms.map(|t| shared.now_ms().saturating_sub(t) as f64);
            shared.add_perf(&channel.id, model, class.is_none(), ttfb);
        }
        Step::Continue
    }

    pub fn on_response_body<H: Host>(&mut self, host: &mut H, end_of_stream: bool) -> Step {
        let Some(status) = self.held else {
            return Step::Continue;
        };
        if !end_of_stream {
            return Step::Stop;
        }
        self.held = None;
        if status == 400 && host.with_response_body(is_context_length_error) {
            // Retriable for Envoy, and marked so the router role can tell the
            // client what it means if no channel is left.
            if !(host.set_response_header(":status", "503") && host.set_response_header(CONTEXT_EXCEEDED_HEADER, "1")) {
                log::warn!("smart-router: could not mark a context-length error for failover");
            }
            return Step::Continue;
        }
        let secret =
            self.target.as_ref().zip(self.table.as_ref()).and_then(|((h, _), t)| t.channel(*h)).map(|c| c.secret());
        if let Some(masked) = secret.and_then(|s| host.with_response_body(|body| mask_secret(body, s))) {
            if !host.replace_response_body(&masked) {
                log::error!("smart-router: could not mask a provider key in an error body");
            }
        }
        Step::Continue
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
                live::unanswered(self.request_id, &channel.id, model);
            }
        }
    }
}
