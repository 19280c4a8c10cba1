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
    assert!(plan.starts_with("sar3 "));

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
}

/// The table with prices: `m` on a at $1 in, $2 out per million, and on b (as
/// `vendor/m`) ten times that, so a goes first.
fn priced_table() -> Table {
    let mut d = doc(vec![channel("a", 1, &["m"]), channel("b", 2, &["vendor/m"])]);
    d.channels[1].aliases.insert("m".into(), "vendor/m".into());
    for (c, (i, o)) in [(0, (1.0, 2.0)), (1, (10.0, 20.0))] {
        d.channels[c].models[0].input_price = Some(i);
        d.channels[c].models[0].output_price = Some(o);
    }
    Table::compile(d, None).unwrap()
}

/// One answered request through both roles: the router's host after its
/// response headers, and the attempt's after its response.
fn answered(
    shared: &Rc<MockShared>,
    body: &str,
    response_headers: &[(&str, &str)],
    chunks: &[&str],
) -> (RouterRole<Rc<Table>>, MockHost, MockHost) {
    let (mut router, mut rhost) = routed(shared, body);
    let plan = rhost.delivered.clone().unwrap().0;
    let (mut role, mut host, _) = attempt(shared, &plan, 1, body);
    host.response_headers = response_headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    role.on_request_body(&mut host, true);
    role.on_response_headers(&mut host, false);
    // Envoy keeps what a filter buffers (`Stop`) and hands it over with the next
    // chunk; what it lets through is gone.
    let mut forwarded = Vec::new();
    let mut buffered = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        buffered.extend_from_slice(c.as_bytes());
        host.response_body = std::mem::take(&mut buffered);
        if role.on_response_body(&mut host, i + 1 == chunks.len()) == Step::Stop {
            buffered = std::mem::take(&mut host.response_body);
        } else {
            forwarded.append(&mut host.response_body);
        }
    }
    host.response_body = forwarded;
    role.on_done();
    rhost.response_headers = host.response_headers.clone();
    rhost.attempts_made = Some(1);
    router.on_response_headers(&mut rhost);
    router.on_done(shared);
    (router, rhost, host)
}

#[test]
fn a_json_answer_is_held_for_its_usage_and_carries_its_cost() {
    let shared = MockShared::with_table(priced_table());
    let usage = r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}"#;
    let (_, rhost, host) = answered(&shared, r#"{"model":"m"}"#, &[(":status", "200")], &[&usage[..20], &usage[20..]]);
    // 1000 * $1/M + 500 * $2/M = $0.002
    assert_eq!(header(&host.response_headers, "x-router-cost").as_deref(), Some("0.002"));
    assert_eq!(header(&rhost.response_headers, "x-router-channel").as_deref(), Some("a"));
    assert_eq!(String::from_utf8(host.response_body).unwrap(), usage, "the body passes whole");
    let [r] = &shared.records.borrow()[..] else { panic!("one record") };
    assert_eq!((r.prompt_tokens, r.completion_tokens, r.cost_pico), (1000, 500, Some(2_000_000_000)));
    assert_eq!((r.status, r.attempts, r.stream, r.usage_estimated), (200, 1, false, false));
    assert_eq!(
        (r.channel.as_deref(), r.model_requested.as_deref(), r.model_used.as_deref()),
        (Some("a"), Some("m"), Some("m"))
    );
    assert_eq!(r.provider.as_deref(), Some("openai"));
    assert_eq!(r.error, None);
    assert_eq!(counted(&shared, Counter::ChannelPromptTokens, "a"), 1000);
    assert_eq!(counted(&shared, Counter::ModelCompletionTokens, "m"), 500);
}

#[test]
fn a_cost_header_the_provider_sent_is_replaced_not_doubled() {
    let shared = MockShared::with_table(priced_table());
    let usage = r#"{"usage":{"prompt_tokens":1000,"completion_tokens":500}}"#;
    let (_, _, host) = answered(&shared, r#"{"model":"m"}"#, &[(":status", "200"), ("x-router-cost", "99")], &[usage]);
    let costs: Vec<&str> =
        host.response_headers.iter().filter(|(k, _)| k == "x-router-cost").map(|(_, v)| v.as_str()).collect();
    assert_eq!(costs, ["0.002"]);
}

#[test]
fn a_stream_asks_for_usage_drops_the_event_the_client_did_not_ask_for_and_comments_its_cost() {
    let shared = MockShared::with_table(priced_table());
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let content = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3}}\n\n";
    let (_, _, host) = answered(&shared, body, &[(":status", "200")], &[content, content, usage, "data: [DONE]\n\n"]);
    let out = String::from_utf8(host.response_body).unwrap();
    assert_eq!(out, format!("{content}{content}: x-router-cost 0.000016\n\ndata: [DONE]\n\n"));
    // Each attempt asked for the usage event.
    let sent = String::from_utf8(host.request_body.clone()).unwrap();
    assert!(sent.starts_with(r#"{"stream_options":{"include_usage":true},"model":"m""#), "{sent}");
    let [r] = &shared.records.borrow()[..] else { panic!("one record") };
    assert_eq!((r.prompt_tokens, r.completion_tokens, r.cost_pico, r.stream), (10, 3, Some(16_000_000), true));
}

#[test]
fn with_accounting_off_answers_pass_unread_and_nothing_is_recorded() {
    let mut d = doc(vec![channel("a", 1, &["m"])]);
    d.channels[0].models[0].input_price = Some(1.0);
    d.usage.enabled = false;
    let shared = MockShared::with_table(Table::compile(d, None).unwrap());
    let usage = r#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500}}"#;
    let (_, _, host) = answered(&shared, r#"{"model":"m"}"#, &[(":status", "200")], &[usage]);
    assert_eq!(header(&host.response_headers, "x-router-cost"), None);
    let body = r#"{"model":"m","stream":true}"#;
    let chunk = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    let (_, _, host) = answered(&shared, body, &[(":status", "200")], &[chunk]);
    assert_eq!(String::from_utf8(host.request_body.clone()).unwrap(), body, "no usage asked for");
    assert_eq!(String::from_utf8(host.response_body).unwrap(), chunk, "the stream passes as it came");
    assert!(shared.records.borrow().is_empty());
    assert_eq!(counted(&shared, Counter::ChannelPromptTokens, "a"), 0);
    assert_eq!(counted(&shared, Counter::ChannelAttempts, "a"), 2, "routing stats stay");
}

#[test]
fn every_chat_request_has_one_record_however_it_ends() {
    let shared = MockShared::with_table(priced_table());
    // Answered here: a bad body.
    let mut role: RouterRole<Rc<Table>> = RouterRole::new(1 << 20);
    let mut host = MockHost::request(&shared, "POST", CHAT, r#"{"model":"nope"}"#);
    role.on_request_headers(&mut host, false);
    role.on_request_body(&mut host, true);
    role.on_done(&shared);
    // A listing is not a chat request: no record.
    let mut role: RouterRole<Rc<Table>> = RouterRole::new(1 << 20);
    let mut host = MockHost::request(&shared, "GET", "/v1/models", "");
    role.on_request_headers(&mut host, true);
    role.on_done(&shared);
    // The client leaves before any answer.
    let (mut router, _) = routed(&shared, r#"{"model":"m"}"#);
    router.on_done(&shared);
    // A stream cut short: what came is estimated.
    let content = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
    let (mut router, mut rhost) = routed(&shared, r#"{"model":"m","stream":true}"#);
    let plan = rhost.delivered.clone().unwrap().0;
    let (mut role, mut host, _) = attempt(&shared, &plan, 1, r#"{"model":"m","stream":true}"#);
    host.response_headers = vec![(":status".into(), "200".into())];
    role.on_response_headers(&mut host, false);
    host.response_body = format!("{content}{content}{content}").into_bytes();
    role.on_response_body(&mut host, false);
    rhost.response_headers = host.response_headers.clone();
    router.on_response_headers(&mut rhost);
    router.on_done(&shared);
    role.on_done();

    let records = shared.records.borrow();
    let got: Vec<_> = records.iter().map(|r| (r.status, r.error.as_deref(), r.usage_estimated)).collect();
    assert_eq!(
        got,
        [
            (404, Some("model_not_found"), false),
            (499, Some("client_closed_request"), false),
            (200, Some("stream_interrupted"), true),
        ]
    );
    assert_eq!(records[0].model_requested.as_deref(), Some("nope"));
    assert_eq!((records[2].completion_tokens, records[2].prompt_tokens), (3, 7));
    let ids: std::collections::HashSet<_> = records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 3, "ids are unique");
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
