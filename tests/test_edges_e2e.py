"""What users rely on that the main suites do not show: streams that break or
are large, clients that leave or read slowly, HTTP/2 and `Expect: 100-continue`
clients, query strings, base URLs by host name and with odd paths, non-ASCII
names, two Envoy workers, and the example configs."""
import http.client
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from harness import ROOT, SAR_BIN, Fake, Router, channel_yaml, request

KEY = "sk-edges-0000-1111"


@pytest.fixture
def stack():
    made = []

    def track(x):
        made.append(x)
        return x

    yield track
    for x in reversed(made):
        x.stop()


def one_channel(tmp_path, stack, models=("m",), extra_channel="", routing="", **router):
    a = stack(Fake("A", list(models), keys=[KEY]))
    r = stack(Router(tmp_path, routing + "channels:\n" + channel_yaml("a", a, key=KEY, extra=extra_channel),
                     **router))
    return a, r


def stream(port, body, read_delay=0.0, stop_after=None, timeout=30):
    """A streaming request: (status, headers, data events, ended with [DONE], error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"content-type": "application/json"})
    resp = conn.getresponse()
    events, done, error = [], False, None
    try:
        for line in resp:
            if line.startswith(b"data: [DONE]"):
                done = True
            elif line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
                if stop_after is not None and len(events) >= stop_after:
                    break
                if read_delay:
                    time.sleep(read_delay)
    except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
        error = e
    headers = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, headers, events, done, error


def chat_body(model="m", **extra):
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_an_upstream_that_dies_mid_stream_ends_the_clients_stream(tmp_path, stack):
    a, r = one_channel(tmp_path, stack)
    a.behave(events=10, event_delay=0.05, abort_after_events=3)
    start = time.time()
    status, _, events, done, _ = stream(r.api_port, chat_body())
    assert status == 200
    assert [e["choices"][0]["delta"]["content"].split()[0] for e in events] == ["tok0", "tok1", "tok2"]
    assert not done, "no [DONE] from a provider that died"
    assert time.time() - start < 5, "the stream ended, it did not hang"
    # Right after the headers: the client gets the headers and an empty stream.
    a.behave(events=10, abort_after_events=0)
    status, _, events, done, _ = stream(r.api_port, chat_body())
    assert status == 200 and events == [] and not done
    # The router is fine afterwards.
    a.behave()
    status, _, events, done, _ = stream(r.api_port, chat_body())
    assert status == 200 and len(events) == 5 and done


def test_a_client_that_leaves_mid_stream_leaves_the_router_serving(tmp_path, stack):
    a, r = one_channel(tmp_path, stack)
    a.behave(events=50, event_delay=0.05)
    status, _, events, _, _ = stream(r.api_port, chat_body(), stop_after=2)
    assert status == 200 and len(events) == 2
    a.behave()
    for _ in range(3):
        status, _, events, done, _ = stream(r.api_port, chat_body())
        assert status == 200 and len(events) == 5 and done
    assert 'sar_channel_ejections{channel="a"}' not in r.prometheus()


def test_a_long_large_stream_arrives_whole_in_order_even_to_a_slow_reader(tmp_path, stack):
    a, r = one_channel(tmp_path, stack)
    # 3,000 events of about 2 KB: some 6 MB.
    a.behave(events=3000, event_delay=0, event_bytes=2000)
    status, _, events, done, error = stream(r.api_port, chat_body())
    assert status == 200 and error is None and done
    assert [int(e["choices"][0]["delta"]["content"].split()[0][3:]) for e in events] == list(range(3000))
    # A client that reads slowly gets the same, with Envoy holding what it cannot take yet.
    a.behave(events=300, event_delay=0, event_bytes=20000)
    status, _, events, done, error = stream(r.api_port, chat_body(), read_delay=0.002)
    assert status == 200 and error is None and done and len(events) == 300


def test_http2_clients_and_expect_100_continue(tmp_path, stack):
    a, r = one_channel(tmp_path, stack)
    url = f"http://127.0.0.1:{r.api_port}/v1/chat/completions"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 4000}]})
    for flags in (["--http2-prior-knowledge"], ["--http1.1", "-H", "Expect: 100-continue"], ["--http1.1"]):
        out = subprocess.run(["curl", "-s", "-i", *flags, "-H", "content-type: application/json",
                              "--data-binary", body, url], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        # (Text mode reads curl's CRLFs as newlines.)
        text = out.stdout
        if "Expect: 100-continue" in flags:
            assert text.startswith("HTTP/1.1 100 Continue\n\n"), text[:200]
            text = text.split("\n\n", 1)[1]
        head, _, payload = text.partition("\n\n")
        assert head.split()[1] == "200", (flags, head)
        assert "x-router-channel: a" in head.lower(), head
        assert json.loads(payload)["provider"] == "A"
        if flags[0] == "--http2-prior-knowledge":
            assert head.startswith("HTTP/2 "), head
    # Streaming over HTTP/2 too.
    out = subprocess.run(["curl", "-s", "-N", "--http2-prior-knowledge", "-H", "content-type: application/json",
                          "--data-binary", json.dumps(chat_body()), url], capture_output=True, text=True, timeout=30)
    assert out.stdout.count("data: {") == 5 and "data: [DONE]" in out.stdout


def test_a_query_string_on_the_client_path_is_routed_and_not_forwarded(tmp_path, stack):
    a, r = one_channel(tmp_path, stack)
    resp = request(r.api_port, "POST", "/v1/chat/completions?api-version=2024-01-01&x=1", chat_body(stream=False))
    assert resp.status == 200, resp
    [seen] = a.requests()
    assert seen["path"] == "/v1/chat/completions"


@pytest.mark.parametrize("shape", ["host name", "no path", "trailing slash"])
def test_base_urls_by_host_name_without_a_path_and_with_a_trailing_slash(tmp_path, stack, shape):
    a = stack(Fake("A", ["m"], keys=[KEY]))
    base = {"host name": f"http://localhost:{a.port}/v1", "no path": f"http://127.0.0.1:{a.port}",
            "trailing slash": f"http://127.0.0.1:{a.port}/v1/"}[shape]
    r = stack(Router(tmp_path, f"channels:\n  - id: a\n    base_url: {base}\n    api_key: {KEY}\n"))
    resp = r.chat("m")
    assert resp.status == 200, resp
    [seen] = a.requests()
    expected_path = {"no path": "/chat/completions"}.get(shape, "/v1/chat/completions")
    assert seen["path"] == expected_path
    host = "localhost" if shape == "host name" else "127.0.0.1"
    assert seen["headers"]["host"] == f"{host}:{a.port}"
    # Discovery went to the same place (the model came from GET .../models).
    assert "m" in [m["id"] for m in r.get("/v1/models").json()["data"]]


def test_non_ascii_messages_model_names_and_aliases(tmp_path, stack):
    models = ["\u901a\u4e49-\u6a21\u578b", "ep-123"]
    a, r = one_channel(tmp_path, stack, models=models,
                       extra_channel="    model_aliases: {\"\u8c46\u5305-pro\": ep-123}\n")
    content = "\u4f60\u597d\uff0c\u4e16\u754c \U0001F600"
    resp = request(r.api_port, "POST", "/v1/chat/completions",
                   {"model": models[0], "messages": [{"role": "user", "content": content}]})
    assert resp.status == 200, resp
    seen = a.requests()[-1]
    assert seen["model"] == models[0]
    assert content in json.loads(seen["body_head"])["messages"][0]["content"]
    # Headers stay ASCII: the model is shown with '?' for what ASCII cannot say.
    assert resp.headers["x-router-model"] == "??-??"
    resp = request(r.api_port, "POST", "/v1/chat/completions",
                   {"model": "\u8c46\u5305-pro", "messages": [{"role": "user", "content": content}]})
    assert resp.status == 200, resp
    assert a.requests()[-1]["model"] == "ep-123"
    ids = [m["id"] for m in r.get("/v1/models").json()["data"]]
    assert models[0] in ids and "\u8c46\u5305-pro" in ids


def test_two_workers_route_fail_over_and_share_breakers(tmp_path, stack):
    a = stack(Fake("A", ["m"], keys=[KEY]))
    b = stack(Fake("B", ["m"], keys=[KEY]))
    r = stack(Router(tmp_path, "channels:\n" + channel_yaml("a", a, priority=1, key=KEY)
                     + channel_yaml("b", b, priority=2, key=KEY), concurrency=2))
    results = []

    def client():
        for _ in range(10):
            resp = r.chat("m")
            results.append((resp.status, resp.headers.get("x-router-channel")))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, "a")] * 40
    # a fails: each worker fails over, and once its breaker opens neither sends it traffic.
    a.behave(status=500)
    for _ in range(6):
        assert r.chat("m").headers["x-router-channel"] == "b"
    time.sleep(0.15)
    seen = len(a.requests())
    for _ in range(20):
        resp = r.chat("m")
        assert resp.status == 200 and resp.headers["x-router-attempts"] == "1"
    assert len(a.requests()) == seen


def test_the_example_configs_are_valid(tmp_path):
    env = {**os.environ, "GROQ_API_KEY": "k", "OPENROUTER_API_KEY": "k"}
    examples = sorted(p for p in os.listdir(os.path.join(ROOT, "examples")) if p.endswith(".yaml"))
    assert "quickstart.yaml" in examples and "router.yaml" in examples
    for name in examples:
        out = subprocess.run([SAR_BIN, "check", "--config", os.path.join(ROOT, "examples", name)],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 0, (name, out.stderr)
        assert "config OK" in out.stdout
