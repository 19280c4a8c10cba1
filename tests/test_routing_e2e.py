"""Routing through a real Envoy: channel selection, rewrites, failover, errors.

Each test starts fake providers, the control plane and Envoy on ephemeral ports.
"""
import hashlib
import http.client
import json
import time

import pytest

from harness import Fake, Router, assert_error, channel_yaml, free_port, request, wait_for

KEYS = {"a": "sk-aaaa-secret-1111", "b": "sk-bbbb-secret-2222", "c": "sk-cccc-secret-3333"}


@pytest.fixture
def fakes():
    made = {}

    def make(name, models, key=None):
        f = Fake(name, models, keys=[key] if key else [])
        made[name] = f
        return f

    yield make
    for f in made.values():
        f.stop()


@pytest.fixture
def router(tmp_path):
    made = []

    def make(config_text, **kw):
        r = Router(tmp_path, config_text, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def three_channels(fakes, router, models=("m",), extra=""):
    a = fakes("A", list(models), KEYS["a"])
    b = fakes("B", list(models), KEYS["b"])
    c = fakes("C", list(models), KEYS["c"])
    cfg = extra + "channels:\n" + "".join(
        channel_yaml(cid, f, priority=i + 1, key=KEYS[cid]) for i, (cid, f) in enumerate(zip("abc", (a, b, c))))
    return a, b, c, router(cfg)


def assert_no_keys(*texts):
    for t in texts:
        s = t.decode(errors="replace") if isinstance(t, bytes) else str(t)
        for k in KEYS.values():
            assert k not in s, f"provider key leaked: {s[:500]}"


def test_physical_model_reaches_the_channel_with_its_key_path_and_name(fakes, router):
    a = fakes("A", ["gpt-4o-mini"], KEYS["a"])
    b = fakes("B", ["qwen/qwen3-30b-a3b:free"], KEYS["b"])
    # B's base URL has a deeper path, as Groq's (/openai/v1) does.
    b_url = f"http://127.0.0.1:{b.port}/openai/v1"
    r = router("channels:\n" + channel_yaml("a", a, key=KEYS["a"])
               + f"  - id: b\n    base_url: {b_url}\n    api_key: {KEYS['b']}\n")
    resp = r.chat("qwen/qwen3-30b-a3b:free", headers={"authorization": "Bearer client-token", "x-api-key": "client-key"})
    assert resp.status == 200, resp
    assert resp.json()["provider"] == "B"
    assert resp.headers["x-router-channel"] == "b"
    [seen] = b.requests()
    assert seen["path"] == "/openai/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {KEYS['b']}"
    assert seen["headers"]["host"] == f"127.0.0.1:{b.port}"
    assert seen["model"] == "qwen/qwen3-30b-a3b:free"
    assert "x-api-key" not in seen["headers"]
    if r.filter == "dynamic-module":
        # The module reads Envoy's attempt count itself; providers do not see it.
        assert "x-envoy-attempt-count" not in seen["headers"]
    assert a.requests() == []

    resp = r.chat("gpt-4o-mini")
    assert resp.status == 200 and resp.json()["provider"] == "A"
    assert a.requests()[0]["headers"]["authorization"] == f"Bearer {KEYS['a']}"
    assert_no_keys(resp.body, resp.headers)


def test_alias_reaches_the_channels_own_model_name(fakes, router):
    a = fakes("A", ["ep-20250203083646-2szv9"], KEYS["a"])
    r = router("channels:\n" + channel_yaml(
        "doubao", a, key=KEYS["a"], extra="    model_aliases:\n      doubao-1.5-pro-256k: ep-20250203083646-2szv9\n"))
    resp = r.chat("doubao-1.5-pro-256k", temperature=0.5, tools=[{"type": "function", "function": {"name": "f"}}])
    assert resp.status == 200, resp
    assert resp.headers["x-router-model"] == "ep-20250203083646-2szv9"
    [seen] = a.requests()
    assert seen["model"] == "ep-20250203083646-2szv9"
    body = json.loads(seen["body_head"])
    # Only `model` changes; every other field passes through untouched.
    assert body["temperature"] == 0.5 and body["tools"][0]["function"]["name"] == "f"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert seen["body_len"] == len(seen["body_head"].encode())
    # The listing shows the standard name.
    ids = [m["id"] for m in r.get("/v1/models").json()["data"]]
    assert "doubao-1.5-pro-256k" in ids


def test_failover_503_429_then_200_json(fakes, router):
    a, b, c, r = three_channels(fakes, router)
    a.behave(status=503)
    b.behave(status=429, retry_after=1)
    resp = r.chat("m")
    assert resp.status == 200, resp
    assert resp.json()["provider"] == "C"
    assert resp.headers["x-envoy-attempt-count"] == "3"
    assert resp.headers["x-router-attempts"] == "3"
    assert resp.headers["x-router-channel"] == "c"
    for fake, cid in ((a, "a"), (b, "b"), (c, "c")):
        [seen] = fake.requests()
        assert seen["headers"]["authorization"] == f"Bearer {KEYS[cid]}"
        assert seen["headers"]["host"] == f"127.0.0.1:{fake.port}"
        assert seen["model"] == "m"


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 401, 403, 429])
def test_every_failover_status_moves_to_the_next_channel(fakes, router, status):
    a = fakes("A", ["m"], KEYS["a"])
    b = fakes("B", ["m"], KEYS["b"])
    r = router("channels:\n" + channel_yaml("a", a, priority=1, key=KEYS["a"])
               + channel_yaml("b", b, priority=2, key=KEYS["b"]))
    a.behave(status=status)
    resp = r.chat("m")
    assert resp.status == 200, resp
    assert resp.json()["provider"] == "B"
    assert resp.headers["x-router-channel"] == "b"
    assert resp.headers["x-router-attempts"] == "2"
    assert [x["status"] for x in a.requests()] == [status]


def read_sse(port, body, timeout=20):
    """POST a streaming request; return (status, headers, [(arrival_time, event_json)])."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"content-type": "application/json"})
    resp = conn.getresponse()
    events = []
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            line = raw.decode().strip()
            if line.startswith("data: "):
                payload = line[6:]
                events.append((time.time(), None if payload == "[DONE]" else json.loads(payload)))
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, events


def test_failover_503_429_then_200_sse_streams_event_by_event(fakes, router):
    a, b, c, r = three_channels(fakes, router)
    a.behave(status=503)
    b.behave(status=429)
    c.behave(events=5, event_delay=0.3)
    status, headers, events = read_sse(r.api_port, {"model": "m", "stream": True, "messages": []})
    assert status == 200
    assert headers["x-router-channel"] == "c"
    assert headers["x-router-attempts"] == "3"
    assert headers["content-type"].startswith("text/event-stream")
    data = [e for _, e in events if e]
    assert [d["provider"] for d in data] == ["C"] * 5
    assert events[-1][1] is None  # [DONE]
    # The first event reached the client before the upstream sent the last one.
    first_arrival = events[0][0]
    last_sent = data[-1]["ts"]
    assert first_arrival < last_sent - 0.5, (first_arrival, last_sent)


def test_connection_refused_fails_over(fakes, router):
    b = fakes("B", ["m"], KEYS["b"])
    dead = free_port()  # nothing listens there
    r = router("channels:\n"
               f"  - id: dead\n    base_url: http://127.0.0.1:{dead}/v1\n    priority: 1\n"
               f"    discover: false\n    configured_models: [m]\n"
               + channel_yaml("b", b, priority=2, key=KEYS["b"]))
    for stream in (False, True):
        resp = r.chat("m", stream=stream)
        assert resp.status == 200, resp
        assert resp.headers["x-router-channel"] == "b"
        assert resp.headers["x-router-attempts"] == "2"


def test_8mb_body_is_routed_and_rewritten_on_every_attempt(fakes, router):
    a = fakes("A", ["ep-1"], KEYS["a"])
    b = fakes("B", ["ep-2"], KEYS["b"])
    r = router("channels:\n"
               + channel_yaml("a", a, priority=1, key=KEYS["a"], extra="    model_aliases: {big-model: ep-1}\n")
               + channel_yaml("b", b, priority=2, key=KEYS["b"], extra="    model_aliases: {big-model: ep-2}\n"))
    a.behave(status=500)
    filler = "x" * (8 * 1024 * 1024)
    body = json.dumps({"model": "big-model", "messages": [{"role": "user", "content": filler}]}).encode()
    resp = r.post_raw("/v1/chat/completions", body)
    assert resp.status == 200, resp
    assert resp.json()["provider"] == "B"
    assert resp.headers["x-router-attempts"] == "2"
    for fake, name in ((a, "ep-1"), (b, "ep-2")):
        [seen] = fake.requests()
        expected = body.replace(b'"big-model"', json.dumps(name).encode(), 1)
        assert seen["model"] == name
        assert seen["body_len"] == len(expected)
        assert seen["body_sha256"] == hashlib.sha256(expected).hexdigest()


def test_client_errors_are_openai_shaped(fakes, router):
    a = fakes("A", ["m"], KEYS["a"])
    r = router("channels:\n" + channel_yaml("a", a, key=KEYS["a"]))
    cases = [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"messages": []}', 400, "missing_model"),
        (b'{"model": 42}', 400, "invalid_model"),
        # What the router's own scanner refuses: bad UTF-8 in a string, nesting
        # past 128 levels, a second "model", trailing bytes.
        (b'{"model": "m", "messages": "\xff"}', 400, "invalid_json"),
        (b'{"model": "m", "x": ' + b"[" * 10000 + b"}", 400, "invalid_json"),
        (b'{"model": "m", "model": "m"}', 400, "invalid_json"),
        (b'{"model": "m"} x', 400, "invalid_json"),
        (b'{"model": "no-such-model-xyz"}', 404, "model_not_found"),
    ]
    for body, status, code in cases:
        resp = r.post_raw("/v1/chat/completions", body)
        assert resp.status == status, (body, resp)
        err = resp.json()["error"]
        assert err["code"] == code and err["type"] and err["message"], err
    assert "no-such-model-xyz" in r.post_raw("/v1/chat/completions", b'{"model": "no-such-model-xyz"}').json()["error"]["message"]
    assert_error(r.get("/v1/nothing-here"), 404, "unknown_url")
    assert_error(r.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert_error(r.post_raw("/v1/models", b"{}"), 405, "method_not_allowed")


def test_body_over_the_limit_is_413(fakes, router, tmp_path):
    a = fakes("A", ["m"], KEYS["a"])
    r = router("channels:\n" + channel_yaml("a", a, key=KEYS["a"]))
    # Lower the limit in the file itself and restart Envoy with it.
    text = r.config_path.read_text().replace("server:\n", "server:\n  max_body_bytes: 65536\n", 1)
    r.config_path.write_text(text)
    r.envoy.terminate()
    r.envoy.wait(timeout=10)
    r.render()
    r.start_envoy()
    r.wait_table()
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "y" * 100_000}]}).encode()
    resp = r.post_raw("/v1/chat/completions", big)
    assert resp.status == 413, resp
    assert resp.json()["error"]["code"] == "request_too_large"
    # Chunked (no content-length): Envoy's own buffer limit answers, in the same shape.
    conn = http.client.HTTPConnection("127.0.0.1", r.api_port, timeout=10)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("content-type", "application/json")
    conn.putheader("transfer-encoding", "chunked")
    conn.endheaders()
    for i in range(0, len(big), 16384):
        part = big[i:i + 16384]
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == "request_too_large"
    assert a.requests() == []


def test_all_channels_failed_is_503_listing_channels_and_no_key_leaks(fakes, router):
    a, b, c, r = three_channels(fakes, router)
    for f in (a, b):
        f.behave(status=500)
    # C answers 401 with an error that echoes part of its key, as OpenAI does.
    c.behave(status=401, error_body=json.dumps({"error": {"message": f"Incorrect API key provided: {KEYS['c']}"}}))
    resp = r.chat("m")
    assert resp.status == 503, resp
    err = resp.json()["error"]
    assert err["code"] == "all_channels_failed"
    assert "a, b, c" in err["message"] and '"m"' in err["message"]
    responses = [resp, r.chat("m", stream=True), r.get("/v1/models"), r.get("/health"),
                 r.chat("unknown"), r.post_raw("/v1/chat/completions", b"{")]
    for x in responses:
        assert_no_keys(x.body, json.dumps(x.headers))
    # Stats, the control plane's admin view and every line of both logs.
    token = (r.dir / "data" / "admin.token").read_text().strip()
    admin = request(r.cp_port, "GET", "/admin/v1/channels", headers={"authorization": f"Bearer {token}"})
    assert admin.status == 200
    assert_no_keys(r.stats(), r.prometheus(), admin.body)
    r.stop()
    assert_no_keys(r.logs())


def test_retries_stop_at_the_end_of_the_plan(fakes, router):
    # Only A and B serve "solo"; C serves something else. The route allows 3
    # retries, but past the plan's end the cluster choice repeats its last channel:
    # Envoy must stop after B rather than try B again.
    a = fakes("A", ["solo"], KEYS["a"])
    b = fakes("B", ["solo"], KEYS["b"])
    c = fakes("C", ["other"], KEYS["c"])
    cfg = "channels:\n" + "".join(
        channel_yaml(cid, f, priority=i + 1, key=KEYS[cid]) for i, (cid, f) in enumerate(zip("abc", (a, b, c))))
    r = router(cfg)
    a.behave(status=500)
    b.behave(status=500)
    resp = r.chat("solo")
    assert resp.status == 503 and resp.json()["error"]["code"] == "all_channels_failed"
    assert resp.headers["x-router-attempts"] == "2"
    assert (len(a.requests()), len(b.requests()), len(c.requests())) == (1, 1, 0)


def test_models_health_and_stats(fakes, router):
    a, b, c, r = three_channels(fakes, router, models=("m", "n"))
    health = r.get("/health").json()
    assert health["status"] == "ok"
    assert health["channels"] == {"total": 3, "up": 3, "down": 0}
    assert health["table_version"]
    models = r.get("/v1/models").json()
    assert models["object"] == "list"
    assert sorted(m["id"] for m in models["data"] if "group" not in m) == ["m", "n"]
    a.behave(status=503)
    assert r.chat("m").status == 200
    assert r.chat("n").status == 200
    def counted():
        p = r.prometheus()
        return p if 'sar_model_requests{model="n"} 1' in p else None

    prom = wait_for(counted, what="router stats in /stats/prometheus")
    # Whole lines: the same names with either filter (no `envoy_` prefix).
    lines = set(prom.splitlines())
    for line in ('sar_channel_attempts{channel="a"} 2', 'sar_channel_failures{channel="a"} 2',
                 'sar_channel_attempts{channel="b"} 2', 'sar_model_failovers{model="m"} 1',
                 'sar_model_requests{model="m"} 1', 'sar_model_requests{model="n"} 1'):
        assert line in lines, line


def test_client_auth(fakes, router):
    a = fakes("A", ["m"], KEYS["a"])
    r = router("auth:\n  enabled: true\n  api_tokens: [sar-test-token]\nchannels:\n" + channel_yaml("a", a, key=KEYS["a"]))
    assert_error(r.chat("m"), 401, "invalid_api_key")
    assert_error(r.chat("m", headers={"authorization": "Bearer wrong"}), 401, "invalid_api_key")
    # A header that is not UTF-8 must not crash the filter.
    assert_error(r.chat("m", headers={"authorization": b"Bearer \xff\xfe".decode("latin-1")}), 401, "invalid_api_key")
    ok = r.chat("m", headers={"authorization": "Bearer sar-test-token"})
    assert ok.status == 200, ok
    # The client's token never reaches the provider; the channel's key does.
    assert a.requests()[0]["headers"]["authorization"] == f"Bearer {KEYS['a']}"
    assert r.get("/health").status == 200  # health stays open for probes
    assert_error(r.get("/v1/models"), 401, "invalid_api_key")
