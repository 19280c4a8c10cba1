"""Client tokens' rate limits through real Envoys: past its requests or tokens
per window a token gets an OpenAI-shaped 429 with retry-after, other tokens
go on, and the token serves again once its window ends; two Envoys sharing one
control plane keep one count between them. The OpenAI SDK is the client."""
import os
import subprocess
import time

import openai
import pytest

from harness import (ENVOY_ARGS, Fake, Router, SAR_BIN, SAR_DYNMOD, SAR_WASM, channel_yaml, envoy_bin, free_port,
                     request, wait_for)

WINDOW_S = 8


def client(port, key):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=20)


def ask(c):
    return c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def config(fake, limits, paid=None):
    text = ("auth:\n  enabled: true\n  api_tokens:\n"
            f"    - {{id: limited, token: sk-limited-000001, limits: {limits}}}\n"
            "    - {id: open, token: sk-open-000000002}\n"
            "    - {id: free_only, token: sk-free-only-0003, allow: {tags: [free]}}\n"
            "channels:\n" + channel_yaml("a", fake, models=["m"], extra="    tags: [free]\n"))
    if paid is not None:
        text += channel_yaml("paid", paid, models=["m", "paidonly"], priority=1)
    return text


@pytest.fixture
def fake():
    f = Fake("A", ["m"])
    yield f
    f.stop()


def test_a_token_past_its_requests_gets_429_with_retry_after_until_its_window_ends(tmp_path, fake):
    r = Router(tmp_path, config(fake, f"{{requests_per_minute: 3, window_seconds: {WINDOW_S}}}"))
    try:
        limited, other = client(r.api_port, "sk-limited-000001"), client(r.api_port, "sk-open-000000002")
        start = time.monotonic()
        for _ in range(3):
            ask(limited)
        with pytest.raises(openai.RateLimitError) as e:
            ask(limited)
        wait = int(e.value.response.headers["retry-after"])
        assert 1 <= wait <= WINDOW_S
        err = e.value.response.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and "limited" in err["message"], err
        assert len(fake.requests()) == 3
        ask(other)
        # Once the window is over the token serves again.
        time.sleep(max(0.0, WINDOW_S - (time.monotonic() - start)) + 0.3)
        ask(limited)
    finally:
        r.stop()


def test_a_token_past_its_tokens_per_window_gets_429(tmp_path, fake):
    # The fake bills a quarter of the body's bytes as prompt tokens plus 4.
    r = Router(tmp_path, config(fake, f"{{tokens_per_minute: 60, window_seconds: {WINDOW_S}}}"))
    try:
        limited = client(r.api_port, "sk-limited-000001")
        served = 0
        with pytest.raises(openai.RateLimitError) as e:
            for _ in range(20):
                ask(limited)
                served += 1
        assert 1 <= served < 20
        assert "tokens" in e.value.response.json()["error"]["message"]
    finally:
        r.stop()


def second_envoy(r, tmp_path):
    """Another Envoy on the same control plane, with its own ports."""
    api, admin = free_port(), free_port()
    text = r.config_path.read_text().replace(f"127.0.0.1:{r.api_port}", f"127.0.0.1:{api}").replace(
        f"127.0.0.1:{r.admin_port}", f"127.0.0.1:{admin}")
    cfg = tmp_path / "second.yaml"
    cfg.write_text(text)
    which = ["--dynamic-module", SAR_DYNMOD] if r.filter == "dynamic-module" else ["--wasm", SAR_WASM]
    out = tmp_path / "envoy-second.yaml"
    subprocess.run([SAR_BIN, "render-envoy", "--config", str(cfg), *which, "--out", str(out)], check=True)
    log = open(tmp_path / "envoy-second.log", "ab")
    proc = subprocess.Popen([envoy_bin(), "-c", str(out), *ENVOY_ARGS], stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: request(api, "GET", "/health", timeout=2).status == 200, what="second envoy", process=proc,
             log=tmp_path / "envoy-second.log")
    return proc, api


def test_two_envoys_on_one_control_plane_share_a_tokens_count(tmp_path, fake):
    paid = Fake("PAID", ["m", "paidonly"])
    r = Router(tmp_path, config(fake, f"{{requests_per_minute: 4, window_seconds: 20}}", paid))
    proc = None
    try:
        proc, api2 = second_envoy(r, tmp_path)
        # A free-only token reaches no paid channel through either Envoy, even
        # when the paid one is preferred or the free one fails.
        for port in (r.api_port, api2):
            free_only = client(port, "sk-free-only-0003")
            ask(free_only)
            with pytest.raises(openai.PermissionDeniedError):
                free_only.chat.completions.create(model="paidonly", messages=[{"role": "user", "content": "hi"}])
        fake.behave(status=503)
        with pytest.raises(openai.APIStatusError):
            ask(client(api2, "sk-free-only-0003"))
        fake.behave()
        assert paid.requests() == []
        fake.reset()
        one, two = client(r.api_port, "sk-limited-000001"), client(api2, "sk-limited-000001")
        ask(one)
        ask(one)
        # Each Envoy hears the other's count through its next health report
        # (within a second).
        time.sleep(2.5)
        ask(two)
        time.sleep(2.5)
        ask(two)
        time.sleep(2.5)
        for c in (one, two):
            with pytest.raises(openai.RateLimitError) as e:
                ask(c)
            assert int(e.value.response.headers["retry-after"]) >= 1
        assert len(fake.requests()) == 4
        # The admin API sums both Envoys' counts.
        s = request(r.cp_port, "GET", "/admin/v1/channels", headers=r.admin_headers())
        assert s.status == 200
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=10)
        r.stop()
        paid.stop()
