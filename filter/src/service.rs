//! The `service` role: a singleton `WasmService` on Envoy's main thread. It polls
//! the control plane for the channel table and publishes each table that compiles
//! in shared data for every worker VM; a table that does not compile is never
//! published, so workers keep the last good one, as they do when the control
//! plane is down. It also reports the workers' breaker states to the control
//! plane, and delivers the usage records workers put on the usage queue.

use std::time::Duration;

use router_core::health::HealthMap;
use router_core::roles::config::ServiceConfig;
use router_core::roles::delivery::RecordBuffer;
use router_core::roles::intake::{Answer, TableFollower};
use router_core::roles::stats::Counter;
use router_core::roles::Shared;

use crate::host;
use crate::vm::{Vm, HEALTH_KEY, TABLE_KEY, TABLE_VERSION_KEY, USAGE_QUEUE};

pub struct TableFetcher {
    cluster: String,
    authority: String,
    authorization: String,
    follower: TableFollower,
    in_flight: bool,
    /// The health report in flight, and the shared-data version last reported.
    report_call: Option<u32>,
    reported_cas: Option<u32>,
    /// Workers' usage records, until the control plane has them.
    queue: Option<u32>,
    records: RecordBuffer,
    usage_call: Option<u32>,
    /// Delivery trouble is logged once per change.
    usage_problem: Option<String>,
    /// This Envoy's name in health reports (the service runs once per Envoy).
    node: String,
    /// When the last health report went.
    reported_ms: u64,
    /// The table limits client tokens: other Envoys' counts are asked for
    /// every `REPORT_EVERY_MS` even without a change here.
    tokens_limited: bool,
}

impl TableFetcher {
    pub fn new(config: ServiceConfig) -> Self {
        host::set_tick_period(Duration::from_millis(config.poll_ms.max(50)));
        Self {
            cluster: config.control_plane_cluster,
            authority: config.control_plane_authority,
            authorization: format!("Bearer {}", config.token),
            follower: TableFollower::default(),
            in_flight: false,
            report_call: None,
            reported_cas: None,
            node: router_core::roles::node_id(crate::vm::random_prefix()),
            reported_ms: 0,
            tokens_limited: false,
            queue: host::register_queue(USAGE_QUEUE),
            records: RecordBuffer::default(),
            usage_call: None,
            usage_problem: None,
        }
    }

    /// Workers put records on the queue: take them all, then send a batch if one is due.
    pub fn on_queue_ready(&mut self, queue: u32) {
        if Some(queue) != self.queue {
            return;
        }
        // (A message holds a worker's records, one a line.)
        while let Some(message) = host::dequeue(queue) {
            for line in message.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                self.records.push(line.to_vec());
            }
        }
        let dropped = self.records.take_dropped();
        if dropped > 0 {
            Vm.stats(|s| s.add(Counter::UsageRecordsDropped, "", dropped));
            log::warn!("smart-router: {dropped} usage records dropped: the buffer for the control plane is full");
        }
        self.deliver();
    }

    /// Send the next batch of records, if one is due and none is in flight.
    fn deliver(&mut self) {
        if self.usage_call.is_some() {
            return;
        }
        let Some(body) = self.records.next_batch(host::now_ms()) else {
            return;
        };
        let headers = [
            (":method", "POST"),
            (":path", "/v1/usage"),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("content-type", "application/x-ndjson"),
        ];
        match host::http_call(&self.cluster, &headers, Some(&body), Duration::from_secs(10)) {
            Some(token) => self.usage_call = Some(token),
            None => self.records.delivered(false),
        }
    }

    fn on_usage_response(&mut self) {
        self.usage_call = None;
        let status = host::http_call_status();
        let stored = status == Some(204);
        self.records.delivered(stored);
        let problem = (!stored).then(|| match status {
            Some(s) => format!("control plane answered {s} to usage records; {} waiting", self.records.len()),
            None => format!("control plane unreachable for usage records; {} waiting", self.records.len()),
        });
        if problem.is_some() != self.usage_problem.is_some() {
            match &problem {
                Some(p) => log::warn!("smart-router: {p}"),
                None => log::info!("smart-router: usage records delivered again"),
            }
        }
        self.usage_problem = problem;
        if stored {
            // More waiting: straight on when a batch's worth is (a busy Envoy
            // makes more than a batch a poll).
            self.deliver();
        }
    }

    pub fn poll(&mut self) {
        self.report_health();
        self.deliver();
        if self.in_flight {
            return;
        }
        let headers = [
            (":method", "GET"),
            (":path", "/v1/table"),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("if-none-match", self.follower.version()),
        ];
        match host::http_call(&self.cluster, &headers, None, Duration::from_secs(5)) {
            Some(_) => self.in_flight = true,
            None => {
                let why = format!("cannot call cluster {}", self.cluster);
                self.follower.on_answer(Answer::Unreachable(why), None);
            }
        }
    }

    /// Send the workers' health map to the control plane when it changed (and
    /// at least every `REPORT_EVERY_MS`), so the admin API shows breakers and
    /// counts, and the answer tells what other Envoys counted.
    fn report_health(&mut self) {
        if self.report_call.is_some() {
            return;
        }
        let (bytes, cas) = host::shared_data_cas(HEALTH_KEY);
        let now = Vm.now_ms();
        let due = self.tokens_limited && now.saturating_sub(self.reported_ms) >= router_core::roles::REPORT_EVERY_MS;
        if !due && (cas.is_none() || cas == self.reported_cas) {
            return;
        }
        let body = bytes.unwrap_or_else(|| HealthMap::default().encode().into_bytes());
        let headers = [
            (":method", "POST"),
            (":path", "/v1/health-report"),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("content-type", "text/plain"),
            (router_core::roles::NODE_HEADER, self.node.as_str()),
        ];
        if let Some(token) = host::http_call(&self.cluster, &headers, Some(&body), Duration::from_secs(5)) {
            self.report_call = Some(token);
            self.reported_cas = cas;
            self.reported_ms = now;
        }
    }

    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        if self.usage_call == Some(token) {
            self.on_usage_response();
            return;
        }
        if self.report_call == Some(token) {
            self.report_call = None;
            match host::http_call_status() {
                Some(200) => {
                    if let Some(answer) = host::http_call_body(body_size) {
                        router_core::roles::live::take_remote_counts(&Vm, &answer);
                    }
                }
                Some(204) => {}
                // Not delivered (control plane down): send it again next poll.
                _ => self.reported_cas = None,
            }
            return;
        }
        self.in_flight = false;
        let body;
        let answer = match host::http_call_status() {
            Some(304) => Answer::NotModified,
            Some(200) => {
                body = host::http_call_body(body_size).unwrap_or_default();
                Answer::Table(&body)
            }
            Some(status) => Answer::Status(status, host::http_call_header("x-error")),
            None => Answer::Unreachable("no response".into()),
        };
        let Answer::Table(bytes) = answer else {
            self.follower.on_answer(answer, None);
            return;
        };
        // Workers compile it again for their own clusters; this one only checks it.
        let Some(table) = self.follower.on_answer(Answer::Table(bytes), None) else {
            return;
        };
        self.tokens_limited = table.tokens_limited;
        let version = self.follower.version().to_string();
        // Table first, then its version: a worker that sees the new version finds
        // the new table.
        if !(host::set_shared_data(TABLE_KEY, bytes) && host::set_shared_data(TABLE_VERSION_KEY, version.as_bytes())) {
            log::warn!("smart-router: could not store table {version} in shared data; fetching it again");
            self.follower.forget_version();
        }
    }
}
