"""Self-test for tests/fake_provider.py (stdlib http.client only)."""
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "sk-test-1"


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    ready = tmp_path_factory.mktemp("fp") / "port"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fake_provider.py"), "--port", "0",
         "--name", "alpha", "--models", "m1,m2", "--key", KEY, "--key", "sk-test-2",
         "--ready-file", str(ready)],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[0] == "LISTENING"
    assert ready.read_text().strip() == line[1]
    yield int(line[1])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0  # clean exit on SIGTERM


@pytest.fixture(autouse=True)
def reset(port):
    call(port, "POST", "/_control/reset", {})
    call(port, "POST", "/_control/keys", {"keys": [KEY, "sk-test-2"]})


def call(port, method, path, body=None, key=KEY, headers=None, conn=None):
    """One request; returns (status, headers, parsed-or-raw body)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if key:
        h["Authorization"] = "Bearer " + key
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    try:
        raw = json.loads(raw)
    except ValueError:
        pass
    if conn is None:
        c.close()
    return r.status, r.headers, raw


def chat(port, model="m1", prefix="/v1", **kw):
    return call(port, "POST", prefix + "/chat/completions",
                {"model": model, "messages": [{"role": "user", "content": "hi"}]}, **kw)


def test_models_and_prefixes(port):
    for prefix in ("/v1", "/openai/v1", ""):
        st, _, body = call(port, "GET", prefix + "/models")
        assert st == 200
        assert [m["id"] for m in body["data"]] == ["m1", "m2"]
        assert body["data"][0]["owned_by"] == "alpha"
    call(port, "POST", "/_control/models", {"models": ["x"]})
    assert call(port, "GET", "/v1/models")[2]["data"][0]["id"] == "x"
    call(port, "POST", "/_control/models", {"models": ["m1", "m2"]})


def test_auth(port):
    st, _, body = chat(port, key="wrong")
    assert st == 401 and body["error"]["code"] == "invalid_api_key"
    assert call(port, "GET", "/v1/models", key=None)[0] == 401
    assert chat(port, key=None, headers={"x-api-key": "sk-test-2"})[0] == 200
    call(port, "POST", "/_control/keys", {"keys": []})
    assert chat(port, key=None)[0] == 200


def test_non_stream_and_keepalive(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):  # two requests over one kept-alive connection
        st, hdrs, body = chat(port, prefix="/openai/v1", conn=conn)
        assert st == 200 and hdrs["X-Fake-Provider"] == "alpha"
        assert body["object"] == "chat.completion" and body["model"] == "m1"
        assert body["choices"][0]["message"]["content"] == "hello from alpha"
        u = body["usage"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    conn.close()
    assert call(port, "POST", "/v1/chat/completions", b"{nope")[0] == 400


def test_stream_arrives_in_chunks(port):
    call(port, "POST", "/_control/behavior", {"events": 4, "event_delay": 0.15})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/v1/chat/completions", json.dumps(
        {"model": "m2", "stream": True, "stream_options": {"include_usage": True}}),
        {"Authorization": "Bearer " + KEY})
    r = c.getresponse()
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["Transfer-Encoding"] == "chunked"
    events, arrivals = [], []
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events.append(line[6:].strip())
            arrivals.append(time.monotonic())
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == b"[DONE]"
    assert [ch["choices"][0]["delta"]["content"] for ch in chunks[:4]] == \
        ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["completion_tokens"] == 4
    assert all(ch["provider"] == "alpha" and "ts" in ch for ch in chunks)
    # Events were delivered one by one, not buffered into a single write.
    assert arrivals[3] - arrivals[0] > 0.35
    c.close()


def test_status_retry_after_and_error_body(port):
    call(port, "POST", "/_control/behavior", {"status": 429, "retry_after": 2})
    st, hdrs, body = chat(port)
    assert st == 429 and hdrs["Retry-After"] == "2"
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert body["error"]["message"] == "fake error 429 from alpha"
    call(port, "POST", "/_control/behavior", {"status": 502, "error_body": "<html>bad</html>"})
    st, _, body = chat(port)
    assert st == 502 and body == b"<html>bad</html>"
    call(port, "POST", "/_control/behavior", {"context_length_error": True})
    st, _, body = chat(port)
    assert st == 400 and body["error"]["code"] == "context_length_exceeded"


def test_fail_times_fail_every_per_model(port):
    call(port, "POST", "/_control/behavior", {"status": 500, "fail_times": 2})
    assert [chat(port)[0] for _ in range(4)] == [500, 500, 200, 200]
    call(port, "POST", "/_control/behavior", {"status": 503, "fail_every": 2})
    assert [chat(port)[0] for _ in range(4)] == [200, 503, 200, 503]
    call(port, "POST", "/_control/behavior", {"per_model": {"m2": {"status": 500}}})
    assert chat(port, model="m1")[0] == 200
    assert chat(port, model="m2")[0] == 500


def test_recorded_requests_and_echo(port):
    call(port, "POST", "/_control/behavior", {"echo_headers": True})
    body = chat(port, headers={"X-Trace": "abc"})[2]
    assert body["received_headers"]["X-Trace"] == "abc"
    call(port, "GET", "/v1/models")
    reqs = call(port, "GET", "/_control/requests")[2]
    assert [r["path"] for r in reqs] == ["/v1/chat/completions", "/v1/models"]
    r = reqs[0]
    assert r["method"] == "POST" and r["model"] == "m1" and r["json_ok"] is True
    assert r["stream"] is False and r["headers"]["x-trace"] == "abc"
    assert r["headers"]["authorization"] == "Bearer " + KEY
    assert r["body_head"].startswith('{"model": "m1"')
    call(port, "POST", "/_control/reset", {})
    assert call(port, "GET", "/_control/requests")[2] == []


def test_large_and_chunked_bodies(port):
    big = json.dumps({"model": "m1", "messages": [
        {"role": "user", "content": "x" * (8 * 1024 * 1024)}]}).encode()
    st, _, body = call(port, "POST", "/v1/chat/completions", big)
    assert st == 200 and body["usage"]["prompt_tokens"] == len(big) // 4
    # Same body sent with chunked transfer encoding.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/v1/chat/completions",
              body=(big[i:i + 65536] for i in range(0, len(big), 65536)),
              headers={"Authorization": "Bearer " + KEY}, encode_chunked=True)
    assert c.getresponse().status == 200
    c.close()
    reqs = call(port, "GET", "/_control/requests")[2]
    assert len(reqs) == 2 and len(reqs[0]["body_head"]) == 2000
    for r in reqs:
        assert r["body_len"] == len(big)
        assert r["body_sha256"] == hashlib.sha256(big).hexdigest()


def test_anthropic_messages(port):
    st, _, body = call(port, "POST", "/anthropic/v1/messages",
                       {"model": "claude-x", "max_tokens": 5, "messages": []},
                       key=None, headers={"x-api-key": KEY})
    assert st == 200 and body["type"] == "message" and body["model"] == "claude-x"
    assert body["content"][0]["text"] == "hello from alpha"
    call(port, "POST", "/_control/behavior", {"events": 2, "event_delay": 0})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/v1/messages", json.dumps({"model": "c", "stream": True}),
              {"x-api-key": KEY})
    text = c.getresponse().read().decode()
    kinds = [ln[7:] for ln in text.splitlines() if ln.startswith("event: ")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") == 2
    c.close()
