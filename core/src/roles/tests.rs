//! The roles against a mock host: what each does to a stream, and what it
//! records.

use std::rc::Rc;

use super::mock::{MockHost, MockShared};
use super::stats::Counter;
use super::{AttemptRole, RouterRole, Step};
use crate::flow::CONTEXT_EXCEEDED_HEADER;
use crate::table::tests::{channel, doc};
use crate::Table;

const CHAT: &str = "/v1/chat/completions";

/// Channel a (`/v1`, bearer key) and b (`/api/v1`, `x-api-key`, serving `m` as
/// `vendor/m`).
fn table() -> Table {
    let mut b = channel("b", 2, &["vendor/m"]);
    b.path_prefix = "/api/v1".into();
    b.auth_header = "x-api-key".into();
    b.auth_value = "key-b-secret".into();
    let mut d = doc(vec![channel("a", 1, &["m"]), b]);
    d.channels[1].aliases.insert("m".into(), "vendor/m".into());
    Table::compile(d, None).unwrap()
}

fn header(list: &[(String, String)], name: &str) -> Option<String> {
    MockHost::header(list, name)
}

/// A routed chat request: the router role after its body, and its host.
fn routed(shared: &Rc<MockShared>, body: &str) -> (RouterRole<Rc<Table>>, MockHost) {
    let mut role = RouterRole::new(1 << 20);
    let mut host = MockHost::request(shared, "POST", CHAT, body);
    assert_eq!(role.on_request_headers(&mut host, false), Step::Stop);
    assert_eq!(role.on_request_body(&mut host, true), Step::Continue, "{:?}", host.reply);
    (role, host)
}

/// Attempt `n` of a delivered plan: the attempt role after its request headers.
fn attempt(shared: &Rc<MockShared>, plan: &str, n: usize, body: &str) -> (AttemptRole<Rc<Table>>, MockHost, Step) {
    let mut role = AttemptRole::default();
    let mut host = MockHost::request(shared, "POST", CHAT, body);
    host.request_headers.push(("content-length".into(), body.len().to_string()));
    host.plan = Some(plan.to_string());
    host.attempt = Some(n);
    let step = role.on_request_headers(&mut host);
    (role, host, step)
}

fn counted(shared: &Rc<MockShared>, counter: Counter, label: &str) -> u64 {
    let drained = shared.stats.borrow_mut().drain();
    let n = drained.iter().filter(|(c, l, _)| *c == counter && l == label).map(|x| x.2).sum();
    // Put the rest back for later checks.
    for (c, l, by) in drained {
        shared.stats.borrow_mut().add(c, &l, by);
    }
    n
}

#[test]
fn local_replies_answer_listings_errors_and_a_missing_table() {
    let shared = MockShared::with_table(table());
    for (method, path, status, code) in [
        ("GET", "/v1/models", 200, None),
        ("GET", "/health", 200, None),
        ("GET", "/nope", 404, Some("unknown_url")),
        ("GET", CHAT, 405, Some("method_not_allowed")),
    ] {
        let mut role: RouterRole<Rc<Table>> = RouterRole::new(1024);
        let mut host = MockHost::request(&shared, method, path, "");
        assert_eq!(role.on_request_headers(&mut host, true), Step::Stop);
        let (got, headers, body) = host.reply.clone().unwrap();
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(header(&headers, "content-type").as_deref(), Some("application/json"));
        if let Some(code) = code {
            assert!(body.contains(code), "{body}");
        }
        // Nothing else happens for a request answered locally.
        assert_eq!(role.on_request_body(&mut host, true), Step::Stop);
        assert_eq!(role.on_response_headers(&mut host), Step::Continue);
        assert!(host.response_headers.is_empty());
    }
    let empty = Rc::new(MockShared::default());
    let mut role: RouterRole<Rc<Table>> = RouterRole::new(1024);
    let mut host = MockHost::request(&empty, "POST", CHAT, "{}");
    role.on_request_headers(&mut host, false);
    assert!(host.reply.unwrap().2.contains("table_not_loaded"));
}

#[test]
fn a_bad_body_is_answered_and_nothing_is_planned() {
    let shared = MockShared::with_table(table());
    for (body, code) in [("{", "invalid_json"), (r#"{"model":"nope"}"#, "model_not_found"), ("{}", "missing_model")] {
        let mut role: RouterRole<Rc<Table>> = RouterRole::new(1 << 20);
        let mut host = MockHost::request(&shared, "POST", CHAT, body);
        role.on_request_headers(&mut host, false);
        assert_eq!(role.on_request_body(&mut host, true), Step::Stop);
        assert!(host.reply.as_ref().unwrap().2.contains(code), "{body}: {:?}", host.reply);
        assert!(host.delivered.is_none());
    }
    let mut role: RouterRole<Rc<Table>> = RouterRole::new(8);
    let mut host = MockHost::request(&shared, "POST", CHAT, r#"{"model":"m"}"#);
    role.on_request_headers(&mut host, false);
    role.on_request_body(&mut host, true);
    assert_eq!(host.reply.unwrap().0, 413);
}

#[test]
fn the_plan_is_handed_over_and_the_answer_gets_debug_headers_and_stats() {
    let shared = MockShared::with_table(table());
    let (mut role, mut host) = routed(&shared, r#"{"model":"m","messages":[]}"#);
    let (plan, clusters, retries) = host.delivered.clone().unwrap();
    assert_eq!(clusters, ["channel_a", "channel_b"]);
    assert_eq!(retries, 1);
    assert!(plan.starts_with("sar2 "));

    host.response_headers = vec![(":status".into(), "200".into())];
    host.attempts_made = Some(2);
    assert_eq!(role.on_response_headers(&mut host), Step::Continue);
    assert_eq!(header(&host.response_headers, "x-router-channel").as_deref(), Some("b"));
    assert_eq!(header(&host.response_headers, "x-router-model").as_deref(), Some("vendor/m"));
    assert_eq!(header(&host.response_headers, "x-router-attempts").as_deref(), Some("2"));
    assert_eq!(counted(&shared, Counter::ChannelAttempts, "a"), 1);
    assert_eq!(counted(&shared, Counter::ChannelFailures, "a"), 1);
    assert_eq!(counted(&shared, Counter::ChannelAttempts, "b"), 1);
    assert_eq!(counted(&shared, Counter::ModelFailovers, "m"), 1);
    assert_eq!(counted(&shared, Counter::ModelRequests, "m"), 1);
}

#[test]
fn a_failure_after_every_attempt_becomes_an_openai_error() {
    let shared = MockShared::with_table(table());
    let (mut role, mut host) = routed(&shared, r#"{"model":"m"}"#);
    host.response_headers = vec![(":status".into(), "502".into())];
    host.attempts_made = Some(2);
    assert_eq!(role.on_response_headers(&mut host), Step::Stop);
    let (status, headers, body) = host.reply.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("all_channels_failed") && body.contains("a, b"), "{body}");
    assert_eq!(header(&headers, "x-router-attempts").as_deref(), Some("2"));
    assert_eq!(counted(&shared, Counter::ModelFailures, "m"), 1);
}

#[test]
fn each_attempt_is_rewritten_for_its_channel() {
    let shared = MockShared::with_table(table());
    let body = r#"{"model":"m","messages":[]}"#;
    let (_, host) = routed(&shared, body);
    let plan = host.delivered.unwrap().0;

    let (mut first, mut h1, step) = attempt(&shared, &plan, 1, body);
    assert_eq!(step, Step::Continue);
    assert_eq!(header(&h1.request_headers, ":authority").as_deref(), Some("127.0.0.1:1"));
    assert_eq!(header(&h1.request_headers, "authorization").as_deref(), Some("Bearer key-a"));
    assert_eq!(first.on_request_body(&mut h1, true), Step::Continue);
    assert_eq!(h1.request_body, body.as_bytes(), "a's model name is the client's");

    let (mut second, mut h2, _) = attempt(&shared, &plan, 2, body);
    assert_eq!(header(&h2.request_headers, ":path").as_deref(), Some("/api/v1/chat/completions"));
    assert_eq!(header(&h2.request_headers, "x-api-key").as_deref(), Some("key-b-secret"));
    assert_eq!(second.on_request_body(&mut h2, false), Step::Stop, "the whole body first");
    assert_eq!(second.on_request_body(&mut h2, true), Step::Continue);
    let spliced = r#"{"model":"vendor/m","messages":[]}"#;
    assert_eq!(String::from_utf8(h2.request_body.clone()).unwrap(), spliced);
    assert_eq!(header(&h2.request_headers, "content-length"), Some(spliced.len().to_string()));
}

#[test]
fn a_context_length_400_is_held_and_made_retriable() {
    let shared = MockShared::with_table(table());
    let (mut router, rhost) = routed(&shared, r#"{"model":"m"}"#);
    let plan = rhost.delivered.clone().unwrap().0;
    let (mut role, mut host, _) = attempt(&shared, &plan, 1, r#"{"model":"m"}"#);
    host.response_headers = vec![(":status".into(), "400".into())];
    assert_eq!(role.on_response_headers(&mut host, false), Step::Stop);
    host.response_body = br#"{"error":{"message":"maximum context length is 4096 tokens"}}"#.to_vec();
    assert_eq!(role.on_response_body(&mut host, false), Step::Stop);
    assert_eq!(role.on_response_body(&mut host, true), Step::Continue);
    assert_eq!(header(&host.response_headers, ":status").as_deref(), Some("503"));
    assert!(header(&host.response_headers, CONTEXT_EXCEEDED_HEADER).is_some());

    // When no channel is left, the router role tells the client what it means.
    let mut rhost = rhost;
    rhost.response_headers = host.response_headers.clone();
    rhost.attempts_made = Some(2);
    router.on_response_headers(&mut rhost);
    let (status, _, body) = rhost.reply.unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("context_length_exceeded"));
}

#[test]
fn a_provider_error_that_quotes_the_key_is_masked() {
    let shared = MockShared::with_table(table());
    let (_, rhost) = routed(&shared, r#"{"model":"m"}"#);
    let plan = rhost.delivered.unwrap().0;
    let (mut role, mut host, _) = attempt(&shared, &plan, 2, r#"{"model":"m"}"#);
    host.response_headers = vec![(":status".into(), "404".into())];
    assert_eq!(role.on_response_headers(&mut host, false), Step::Stop);
    host.response_body = br#"{"error":{"message":"no model for key key-b-secret"}}"#.to_vec();
    assert_eq!(role.on_response_body(&mut host, true), Step::Continue);
    let body = String::from_utf8(host.response_body).unwrap();
    assert_eq!(body, r#"{"error":{"message":"no model for key key*********"}}"#);
    // A success is not held.
    let (mut ok, mut h, _) = attempt(&shared, &plan, 1, r#"{"model":"m"}"#);
    h.response_headers = vec![(":status".into(), "200".into())];
    assert_eq!(ok.on_response_headers(&mut h, false), Step::Continue);
    assert_eq!(ok.on_response_body(&mut h, false), Step::Continue);
}

#[test]
fn an_unanswered_attempt_counts_against_its_channel_only_if_the_client_waited() {
    for responded in [true, false] {
        let shared = MockShared::with_table(table());
        let (mut router, mut rhost) = routed(&shared, r#"{"model":"m"}"#);
        let plan = rhost.delivered.clone().unwrap().0;
        let (mut role, _, _) = attempt(&shared, &plan, 1, r#"{"model":"m"}"#);
        role.on_done();
        if responded {
            rhost.response_headers = vec![(":status".into(), "200".into())];
            rhost.attempts_made = Some(2);
            router.on_response_headers(&mut rhost);
        }
        router.on_done(&shared);
        let tracked = shared.health.borrow().entries.contains_key("a");
        assert_eq!(tracked, responded, "responded: {responded}");
    }
}

#[test]
fn an_attempt_whose_channel_left_the_table_is_answered_not_sent() {
    let shared = MockShared::with_table(table());
    let (mut router, mut rhost) = routed(&shared, r#"{"model":"m"}"#);
    let plan = rhost.delivered.clone().unwrap().0;
    // A reload removes b while the request is in flight.
    *shared.table.borrow_mut() = Some(Rc::new(Table::compile(doc(vec![channel("a", 1, &["m"])]), None).unwrap()));
    let (mut role, mut host, step) = attempt(&shared, &plan, 2, r#"{"model":"m"}"#);
    host.request_headers.push(("authorization".into(), "Bearer client-token".into()));
    assert_eq!(step, Step::Stop);
    let (status, _, body) = host.reply.clone().unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("channel_unavailable") && body.contains("channel b"), "{body}");
    assert_eq!(header(&host.request_headers, ":authority"), None, "nothing was prepared for sending");
    assert_eq!(counted(&shared, Counter::ChannelAttemptErrors, "b"), 1);
    role.on_done();
    // The router role lets that answer stand.
    rhost.response_headers = vec![(":status".into(), "503".into())];
    rhost.attempts_made = Some(2);
    assert_eq!(router.on_response_headers(&mut rhost), Step::Continue);
    assert!(rhost.reply.is_none());
    router.on_done(&shared);

    // An unreadable plan, or none, is answered the same way.
    for plan in [Some("garbage"), None] {
        let mut role: AttemptRole<Rc<Table>> = AttemptRole::default();
        let mut host = MockHost::request(&shared, "POST", CHAT, "{}");
        host.plan = plan.map(str::to_string);
        assert_eq!(role.on_request_headers(&mut host), Step::Stop);
        assert_eq!(host.reply.unwrap().0, 503);
    }
}
