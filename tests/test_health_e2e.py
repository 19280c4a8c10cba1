"""Channel health through a real Envoy: a broken channel stops
getting traffic at once, on every worker, and comes back by itself."""
import http.client
import json
import time

import pytest

from harness import Fake, Router, request, wait_for

BREAKER = """routing:
  error_cooldown_period: 1
  circuit_breaker:
    window: 30
    min_failures: 3
    failure_ratio: 0.5
"""


@pytest.fixture
def pair(tmp_path):
    made = []

    def make(a_key="key-a", concurrency=1, models=("m1", "m2"), key_validation_interval=1):
        a = Fake("A", list(models), keys=["key-a"])
        b = Fake("B", list(models), keys=["key-b"])
        cfg = BREAKER + "channels:\n" + "".join(
            f"  - id: {cid}\n    base_url: {f.base_url}\n    api_key: {key}\n    priority: {p}\n"
            f"    discover: false\n    configured_models: {list(models)}\n"
            for cid, f, key, p in (("a", a, a_key, 1), ("b", b, "key-b", 2)))
        r = Router(tmp_path, cfg, concurrency=concurrency, control_plane_extra=f"  key_validation_interval: {key_validation_interval}\n")
        made.extend([a, b, r])
        return a, b, r

    yield make
    for x in made:
        x.stop()


def served_by(r, model="m1"):
    resp = r.chat(model)
    assert resp.status == 200, resp
    return resp.headers["x-router-channel"], resp.headers["x-router-attempts"]


def test_invalid_key_takes_the_whole_channel_out_until_it_validates(pair):
    a, b, r = pair()
    assert served_by(r) == ("a", "1")
    # The provider stops accepting a's key (revoked): a answers 401 once...
    a.control("keys", {"keys": ["some-other-key"]})
    assert served_by(r, "m1") == ("b", "2")
    seen = len(a.requests())
    # ...and is skipped at once for every model it serves, not model by model.
    for model in ("m2", "m1", "m2", "m1"):
        assert served_by(r, model) == ("b", "1")
    assert len(a.requests()) == seen
    # The key works again; the next key validation (every second here) brings a back.
    a.control("keys", {"keys": ["key-a"]})
    wait_for(lambda: served_by(r)[0] == "a", timeout=5, what="a back after key validation")


def test_rate_limited_channel_rests_for_retry_after(pair):
    a, b, r = pair()
    a.behave(status=429, retry_after=2)
    start = time.time()
    assert served_by(r) == ("b", "2")
    a.behave()
    seen = len(a.requests())
    while time.time() - start < 1.6:
        assert served_by(r)[0] == "b"
        time.sleep(0.1)
    assert len(a.requests()) == seen, "no traffic to a while it rests"
    # The same channel's other models were not rate limited.
    assert served_by(r, "m2") == ("a", "1")
    wait_for(lambda: served_by(r)[0] == "a", timeout=3, what="a back after Retry-After")
    assert time.time() - start >= 2.0


def test_breaker_opens_on_failure_ratio_probes_and_closes(pair):
    a, b, r = pair()
    a.behave(fail_every=2, status=500)
    # Every second answer of a fails and fails over to b. The breaker needs three
    # failures that are half the window's attempts: it opens at a's sixth
    # attempt, not before; then b alone serves, in one attempt.
    served = [served_by(r) for _ in range(7)]
    assert served == [("a", "1"), ("b", "2")] * 3 + [("b", "1")], served
    opened = time.time()
    assert [x["status"] for x in a.requests()] == [200, 500] * 3
    wait_for(lambda: 'sar_channel_ejections{channel="a"} 1' in r.prometheus(), timeout=5, what="ejection counted")
    # a recovers, but the breaker stays open for its cooldown (1 s here): no
    # traffic until then...
    a.behave()
    seen = len(a.requests())
    while time.time() - opened < 0.8:
        assert served_by(r) == ("b", "1")
        time.sleep(0.05)
    assert len(a.requests()) == seen, "an open breaker gets no traffic"
    # ...then one probe goes through and closes it.
    wait_for(lambda: served_by(r) == ("a", "1"), timeout=3, interval=0.05, what="breaker closed after probe")
    reopened = time.time() - opened
    assert 0.95 <= reopened < 2.5, reopened
    assert [served_by(r) for _ in range(3)] == [("a", "1")] * 3


def test_a_breaker_opened_on_one_worker_keeps_every_worker_away(pair):
    a, b, r = pair(concurrency=2)
    a.behave(status=429, retry_after=5)
    assert served_by(r) == ("b", "2")
    a.behave()
    seen = len(a.requests())
    time.sleep(0.15)  # the documented 100 ms for every worker to see it, plus a margin
    # Each request opens a new connection; Envoy spreads them over both workers.
    for _ in range(30):
        assert served_by(r)[0] == "b"
    assert len(a.requests()) == seen


def test_a_stalled_channel_is_abandoned_after_first_byte_timeout(tmp_path):
    a = Fake("A", ["m"])
    b = Fake("B", ["m"])
    try:
        cfg = ("routing:\n  first_byte_timeout: 1\n  idle_timeout: 5\nchannels:\n"
               f"  - id: a\n    base_url: {a.base_url}\n    priority: 1\n"
               f"  - id: b\n    base_url: {b.base_url}\n    priority: 2\n")
        r = Router(tmp_path, cfg)
        try:
            a.behave(first_byte_delay=4)
            b.behave(events=3, event_delay=0.05)
            from test_routing_e2e import read_sse
            start = time.time()
            status, headers, events = read_sse(r.api_port, {"model": "m", "stream": True, "messages": []})
            took = time.time() - start
            assert status == 200 and headers["x-router-channel"] == "b"
            assert [e["provider"] for _, e in events if e] == ["B"] * 3
            assert 0.9 < took < 3.0, took
            # A long stream that has started is not cut by the first-byte timeout.
            b.behave(events=6, event_delay=0.3)
            a.behave(status=503)
            status, headers, events = read_sse(r.api_port, {"model": "m", "stream": True, "messages": []})
            assert status == 200 and len([e for _, e in events if e]) == 6
        finally:
            r.stop()
    finally:
        a.stop()
        b.stop()


def test_a_stream_silent_longer_than_idle_timeout_is_cut(tmp_path):
    a = Fake("A", ["m"])
    try:
        cfg = ("routing:\n  first_byte_timeout: 1.5\n  idle_timeout: 1.5\nchannels:\n"
               f"  - id: a\n    base_url: {a.base_url}\n")
        r = Router(tmp_path, cfg)
        try:
            from test_routing_e2e import read_sse
            # Gaps well under idle_timeout: a stream longer than it still completes.
            a.behave(events=8, event_delay=0.3)
            status, _, events = read_sse(r.api_port, {"model": "m", "stream": True, "messages": []})
            assert status == 200 and len([e for _, e in events if e]) == 8
            # A gap longer than idle_timeout: Envoy ends the stream after the first
            # event, once the idle timer runs out (not at once, not at the end).
            a.behave(events=3, event_delay=4)
            start = time.time()
            received, cut = [], None
            conn = http.client.HTTPConnection("127.0.0.1", r.api_port, timeout=10)
            conn.request("POST", "/v1/chat/completions",
                         body=json.dumps({"model": "m", "stream": True, "messages": []}),
                         headers={"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            try:
                for line in resp:
                    if line.startswith(b"data: {"):
                        received.append(json.loads(line[6:]))
            except (http.client.IncompleteRead, ConnectionError) as e:
                cut = e
            took = time.time() - start
            conn.close()
            assert len(received) == 1, (received, cut)
            assert 1.4 <= took < 3.8, took
        finally:
            r.stop()
    finally:
        a.stop()


def test_clients_giving_up_before_the_first_byte_do_not_eject_a_slow_channel(pair):
    # The control plane's key check would also find the stopped channel below
    # (unreachable) and race the filter's own refusal count: it stays out of it.
    a, b, r = pair(key_validation_interval=3600)
    a.behave(first_byte_delay=1.5)
    # Five clients time out while a is still thinking (the breaker would open at
    # three failures): their attempts are reset by Envoy, which is not a.
    gave_up = 0
    for _ in range(5):
        try:
            request(r.api_port, "POST", "/v1/chat/completions", {"model": "m1", "messages": []}, timeout=0.3)
        except (TimeoutError, OSError):
            gave_up += 1
    assert gave_up == 5, "every client gave up before a answered"
    a.behave()
    time.sleep(0.3)  # one tick, should a worker have recorded anything
    assert served_by(r) == ("a", "1")
    assert 'sar_channel_ejections{channel="a"}' not in r.prometheus()
    # A channel that really does not answer is still taken out: connection refused.
    # (Each refusal is booked when its request ends, which may be just after the
    # client has its answer: allow a request or two for that.)
    a.stop()
    served = [served_by(r) for _ in range(6)]
    assert served[:3] == [("b", "2")] * 3, served
    assert served[-1] == ("b", "1"), f"a is out after its refusals: {served}"


def test_admin_channels_shows_breakers_envoy_reported(pair):
    from harness import request
    a, b, r = pair()
    token = (r.dir / "data" / "admin.token").read_text().strip()

    def channels():
        resp = request(r.cp_port, "GET", "/admin/v1/channels", headers={"authorization": f"Bearer {token}"})
        assert resp.status == 200, resp
        assert b"key-a" not in resp.body and b"key-b" not in resp.body
        return {c["id"]: c for c in resp.json()["channels"]}

    assert request(r.cp_port, "GET", "/admin/v1/channels").status == 401
    ch = channels()
    assert ch["a"]["state"] == "ok" and ch["a"]["models"] == 2 and ch["a"]["key_ok_ms"]
    a.behave(status=429, retry_after=30)
    assert served_by(r)[0] == "b"

    def rate_limited():
        bs = channels()["a"]["breakers"]
        return bs and bs[0]["scope"] == "m1" and bs[0]["state"] == "open" and bs[0]["reason"] == "rate limited"

    wait_for(rate_limited, timeout=5, what="breaker reported to the control plane")
    a.control("keys", {"keys": ["nope"]})
    served_by(r, "m2")  # a answers 401: the whole channel is out
    wait_for(lambda: channels()["a"]["state"] == "out", timeout=5, what="channel out in the report")


def test_context_length_400_is_retried_on_another_channel(pair):
    a, b, r = pair()
    a.behave(context_length_error=True)
    assert served_by(r) == ("b", "2")
    # Not the channel's fault: a is not taken out.
    a.behave()
    assert served_by(r) == ("a", "1")
    # When no channel can take it, the client gets the 400 it means.
    a.behave(context_length_error=True)
    b.behave(context_length_error=True)
    resp = r.chat("m1")
    assert resp.status == 400, resp
    err = resp.json()["error"]
    assert err["code"] == "context_length_exceeded" and "a, b" in err["message"]
    # Any other 400 is the client's: passed through, no failover.
    a.behave(status=400)
    b.behave()
    resp = r.chat("m1")
    assert resp.status == 400 and resp.headers["x-router-channel"] == "a"
    assert resp.json()["error"]["message"] == "fake error 400 from A"


def test_context_length_error_moves_to_the_larger_context_model(tmp_path):
    small, big = Fake("SMALL", ["chat-4k"]), Fake("BIG", ["chat-128k"])
    try:
        # speed_optimized with no measurements yet: equal scores, so priority puts
        # the small model first (cost_first would prefer the larger context).
        cfg = "routing:\n  default_strategy: speed_optimized\nchannels:\n" + "".join(
            f"  - id: {cid}\n    base_url: {f.base_url}\n    priority: {p}\n"
            for cid, f, p in (("small", small, 1), ("big", big, 2)))
        r = Router(tmp_path, cfg)
        try:
            small.behave(context_length_error=True)
            resp = r.chat("tag:chat")
            assert resp.status == 200, resp
            assert resp.headers["x-router-channel"] == "big" and resp.headers["x-router-model"] == "chat-128k"
            assert len(small.requests()) == 1
        finally:
            r.stop()
    finally:
        small.stop()
        big.stop()


def test_a_single_channel_stalled_before_the_first_byte_times_out(tmp_path):
    # A one-attempt plan runs without Envoy retry state; its first-byte timer
    # must still end the wait.
    a = Fake("A", ["m"])
    try:
        cfg = ("routing:\n  first_byte_timeout: 1\n  idle_timeout: 5\nchannels:\n"
               f"  - id: a\n    base_url: {a.base_url}\n")
        r = Router(tmp_path, cfg)
        try:
            a.behave(first_byte_delay=4)
            start = time.time()
            resp = r.chat("m")
            took = time.time() - start
            assert 0.9 < took < 3.0, took
            assert resp.status == 503, resp
            assert resp.json()["error"]["code"] == "all_channels_failed", resp
            assert "tried a (last answer: 504)" in resp.json()["error"]["message"], resp
        finally:
            r.stop()
    finally:
        a.stop()
