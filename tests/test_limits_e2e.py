"""A free tier used to its last request, through a real Envoy: a channel whose
provider allows 3 requests a window serves exactly 3, the 4th goes to the paid
channel without any 429 reaching a provider or the client, and the free channel
serves again once its window resets; a daily limit moves the request after it
to the next channel; a provider's own x-ratelimit headers make the router rest
the channel before its 429. Short windows, real Envoy, the OpenAI SDK as client."""
import subprocess
import time

import openai
import pytest

from harness import SAR_BIN, Fake, Router, channel_yaml, request, wait_for

WINDOW_S = 3


@pytest.fixture
def fakes():
    free, paid = Fake("FREE", ["m"]), Fake("PAID", ["m"])
    yield free, paid
    free.stop()
    paid.stop()


def client(r):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{r.api_port}/v1", api_key="unused", max_retries=0, timeout=20)


def channel_of(c, stream=False):
    if stream:
        with c.chat.completions.with_streaming_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True) as resp:
            for _ in resp.iter_lines():
                pass
            return resp.headers["x-router-channel"]
    resp = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return resp.headers["x-router-channel"]


def statuses(fake):
    return [x["status"] for x in fake.requests()]


def config(free, paid, limits):
    return ("channels:\n"
            + channel_yaml("free", free, models=["m"], priority=1, extra=f"    tags: [free]\n    limits: {limits}\n")
            + channel_yaml("paid", paid, models=["m"], priority=2))


def test_a_free_window_is_used_to_its_last_request_and_again_after_it_resets(tmp_path, fakes):
    free, paid = fakes
    # The provider enforces the same window (and says so in its headers, which
    # this channel is told to ignore: the router's own count is what is tested).
    free.behave(rate_limit={"requests": 3, "window": WINDOW_S, "headers": False})
    r = Router(tmp_path, config(free, paid, f"{{requests_per_minute: 3, window_seconds: {WINDOW_S}, provider_headers: false}}"))
    try:
        c = client(r)
        start = time.monotonic()
        got = [channel_of(c, stream=i == 1) for i in range(5)]
        assert time.monotonic() - start < WINDOW_S, "the test's requests must fit in one window"
        assert got == ["free", "free", "free", "paid", "paid"]
        assert statuses(free) == [200, 200, 200], "exactly 3 reached the free provider, no 429"
        wait_for(lambda: time.monotonic() - start > WINDOW_S + 0.3, timeout=WINDOW_S + 5, what="the window to pass")
        assert channel_of(c) == "free"
        assert 429 not in statuses(free) + statuses(paid)
    finally:
        r.stop()


def test_a_daily_limit_moves_the_next_request_to_the_next_channel(tmp_path, fakes):
    free, paid = fakes
    r = Router(tmp_path, config(free, paid, "{requests_per_day: 4, timezone: America/Los_Angeles}"))
    try:
        c = client(r)
        assert [channel_of(c) for _ in range(6)] == ["free"] * 4 + ["paid"] * 2
        assert len(free.requests()) == 4
        # The channel status shows the limit and what Envoy counted against it.
        admin = {"authorization": f"Bearer {(r.dir / 'data' / 'admin.token').read_text().strip()}"}

        def limits():
            chans = request(r.cp_port, "GET", "/admin/v1/channels", headers=admin).json()["channels"]
            return next(ch for ch in chans if ch["id"] == "free")["limits"]

        wait_for(lambda: limits().get("requests_today") == 4, timeout=15, what="the day's count in the status")
        assert limits()["requests_per_day"] == 4 and limits()["day_started_ms"] > 0
    finally:
        r.stop()


def test_a_token_limit_moves_requests_on_once_the_providers_reported_tokens_reach_it(tmp_path, fakes):
    free, paid = fakes
    # The fake reports a quarter of the body's bytes as prompt tokens, plus 4.
    r = Router(tmp_path, config(free, paid, f"{{tokens_per_minute: 100, window_seconds: {WINDOW_S * 3}, provider_headers: false}}"))
    try:
        c = client(r)
        got = [channel_of(c) for _ in range(8)]
        n = got.index("paid")
        assert n >= 1 and got[n:] == ["paid"] * (8 - n), got
        used = sum(x["body_len"] // 4 + 4 for x in free.requests())
        assert used >= 100 and len(free.requests()) == n
    finally:
        r.stop()


def test_the_providers_headers_rest_the_channel_before_its_429(tmp_path, fakes):
    free, paid = fakes
    # The router knows no limit; the provider's headers say when its window is spent.
    free.behave(rate_limit={"requests": 2, "window": WINDOW_S})
    r = Router(tmp_path, config(free, paid, "{requests_per_day: 1000000}"))
    try:
        c = client(r)
        start = time.monotonic()
        got = [channel_of(c) for _ in range(4)]
        assert got == ["free", "free", "paid", "paid"]
        assert statuses(free) == [200, 200], "the router stopped at remaining 0, before any 429"
        wait_for(lambda: channel_of(c) == "free", timeout=WINDOW_S + 5, interval=0.3, what="the free channel back")
        assert time.monotonic() - start >= WINDOW_S - 0.5
        assert 429 not in statuses(free)
    finally:
        r.stop()


def test_limits_that_cannot_be_kept_are_refused(tmp_path):
    cfg = tmp_path / "bad.yaml"
    for limits, reason in (
        ("{}", "requests_per_minute, requests_per_day"),
        ("{requests_per_minute: 3, window_seconds: 0}", "window_seconds"),
        ("{requests_per_day: 3, timezone: Mars/Base}", "Mars/Base"),
        ("{requests_per_day: 3, reset: '25:00'}", "25:00"),
        ("{requests_per_hour: 3}", "requests_per_hour"),
    ):
        cfg.write_text("channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n    discover: false\n"
                       f"    configured_models: [m]\n    limits: {limits}\n")
        out = subprocess.run([SAR_BIN, "check", "--config", str(cfg)], capture_output=True, text=True)
        assert out.returncode != 0, limits
        assert reason in out.stderr, (limits, out.stderr)
        assert "panicked" not in out.stderr
