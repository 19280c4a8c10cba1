//! A host for the roles' unit tests: Envoy's side as plain data, recording what
//! the roles did to it.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::health::HealthMap;
use crate::record::Record;
use crate::score::{PerfBatch, PerfMap};
use crate::Table;

use super::host::{Host, Shared};
use super::stats::Stats;

#[derive(Default)]
pub struct MockShared {
    pub table: RefCell<Option<Rc<Table>>>,
    pub now: Cell<u64>,
    pub health: RefCell<HealthMap>,
    pub perf: RefCell<PerfMap>,
    pub perf_batch: RefCell<PerfBatch>,
    pub stats: RefCell<Stats>,
    pub records: RefCell<Vec<Record>>,
    pub next_id: Cell<u64>,
}

impl MockShared {
    pub fn with_table(table: Table) -> Rc<Self> {
        let s = Self::default();
        *s.table.borrow_mut() = Some(Rc::new(table));
        s.now.set(1_000_000);
        Rc::new(s)
    }
}

impl Shared for Rc<MockShared> {
    type Table = Rc<Table>;

    fn table(&self) -> Option<Rc<Table>> {
        self.table.borrow().clone()
    }

    fn now_ms(&self) -> u64 {
        self.now.get()
    }

    fn health<R>(&self, read: impl FnOnce(&HealthMap) -> R) -> R {
        read(&self.health.borrow())
    }

    fn update_health(&self, mut change: impl FnMut(&mut HealthMap) -> bool) -> bool {
        change(&mut self.health.borrow_mut())
    }

    fn perf<R>(&self, read: impl FnOnce(&PerfMap) -> R) -> R {
        read(&self.perf.borrow())
    }

    fn add_perf(&self, channel: &str, model: &str, answered: bool, ttfb_ms: Option<f64>) {
        self.perf_batch.borrow_mut().add(channel, model, answered, ttfb_ms);
    }

    fn stats(&self, record: impl FnOnce(&mut Stats)) {
        record(&mut self.stats.borrow_mut());
    }

    fn next_record_id(&self) -> String {
        self.next_id.set(self.next_id.get() + 1);
        format!("mock-{}", self.next_id.get())
    }

    fn emit_record(&self, record: Record) {
        self.records.borrow_mut().push(record);
    }
}

/// A local reply: status, headers, body.
pub type Reply = (u16, Vec<(String, String)>, String);

/// One stream: headers and bodies as maps and bytes, and what was done to them.
pub struct MockHost {
    pub shared: Rc<MockShared>,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    /// (status, headers, body) of a local reply.
    pub reply: Option<Reply>,
    /// (plan text, clusters, retries) handed to Envoy.
    pub delivered: Option<(String, Vec<String>, usize)>,
    /// The plan, on the attempt side.
    pub plan: Option<String>,
    pub attempt: Option<usize>,
    pub attempts_made: Option<usize>,
}

impl MockHost {
    pub fn new(shared: &Rc<MockShared>) -> Self {
        Self {
            shared: shared.clone(),
            request_headers: Vec::new(),
            request_body: Vec::new(),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            reply: None,
            delivered: None,
            plan: None,
            attempt: None,
            attempts_made: None,
        }
    }

    pub fn request(shared: &Rc<MockShared>, method: &str, path: &str, body: &str) -> Self {
        let mut h = Self::new(shared);
        h.request_headers = vec![(":method".into(), method.into()), (":path".into(), path.into())];
        h.request_body = body.as_bytes().to_vec();
        h
    }

    pub fn header(list: &[(String, String)], name: &str) -> Option<String> {
        list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

fn set(list: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    list.retain(|(k, _)| k != name);
    if let Some(v) = value {
        list.push((name.to_string(), v.to_string()));
    }
}

impl Host for MockHost {
    type Shared = Rc<MockShared>;

    fn shared(&self) -> &Rc<MockShared> {
        &self.shared
    }

    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.request_headers.iter().find(|(k, _)| k == name).map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.request_headers, name, value);
    }

    fn with_request_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&self.request_body)
    }

    fn edit_request_body(&mut self, edits: &[((usize, usize), String)]) -> bool {
        match crate::flow::edited(&self.request_body, edits) {
            Some(b) => {
                self.request_body = b;
                true
            }
            None => false,
        }
    }

    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.response_headers.iter().find(|(k, _)| k == name).map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    fn set_response_header(&mut self, name: &str, value: &str) -> bool {
        set(&mut self.response_headers, name, Some(value));
        true
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        self.response_headers.push((name.to_string(), value.to_string()));
    }

    fn with_response_body<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        read(&self.response_body)
    }

    fn replace_response_body(&mut self, body: &[u8]) -> bool {
        self.response_body = body.to_vec();
        true
    }

    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.reply = Some((status, headers, body.to_string()));
    }

    fn deliver_plan<'a>(&mut self, plan: &str, clusters: impl Iterator<Item = &'a str>, retries: usize) -> bool {
        self.delivered = Some((plan.to_string(), clusters.map(str::to_string).collect(), retries));
        true
    }

    fn plan_text(&self) -> Option<Cow<'_, str>> {
        self.plan.as_deref().map(Cow::Borrowed)
    }

    fn attempt_number(&self) -> Option<usize> {
        self.attempt
    }

    fn attempts_made(&self) -> Option<usize> {
        self.attempts_made
    }
}
