"""Pricing policies through a real Envoy: a channel's off-peak discount makes it
the cheapest while its window holds (routing follows, and records and
x-router-cost price the answer at the discounted price), and a surcharge past a
day's tokens applies once the channel's recorded tokens pass it."""
import datetime
import subprocess

import pytest

from harness import SAR_BIN, Fake, Router, channel_yaml, request, wait_for

PICO = 10 ** 12


def usd_text(pico):
    whole, frac = divmod(pico, PICO)
    return str(whole) if frac == 0 else f"{whole}.{f'{frac:012d}'.rstrip('0')}"


def cost(prompt, completion, usd_in, usd_out, multiplier=1.0):
    """Picodollars, as the router prices: per-token prices from the per-million
    price times the multipliers."""
    return prompt * round(usd_in * multiplier * 1e6) + completion * round(usd_out * multiplier * 1e6)


def hhmm(t):
    return t.strftime("%H:%M")


def window_around_now(minutes):
    now = datetime.datetime.now(datetime.timezone.utc)
    return hhmm(now - datetime.timedelta(minutes=minutes)), hhmm(now + datetime.timedelta(minutes=minutes))


def window_away_from_now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return hhmm(now + datetime.timedelta(hours=3)), hhmm(now + datetime.timedelta(hours=4))


def chat(r, content="x" * 400):
    resp = request(r.api_port, "POST", "/v1/chat/completions",
                   {"model": "m", "messages": [{"role": "user", "content": content}]})
    assert resp.status == 200, resp
    return resp


@pytest.fixture
def fakes():
    a, b = Fake("A", ["m"]), Fake("B", ["m"])
    yield a, b
    a.stop()
    b.stop()


def config(a, b, window):
    start, end = window
    return ("channels:\n"
            + channel_yaml("a", a, models=["m"], extra=(
                "    pricing: {input: 1.0, output: 2.0}\n"
                "    pricing_policies:\n"
                "      - name: off-peak\n        multiplier: 0.5\n"
                f"        time_window: {{from: \"{start}\", to: \"{end}\", timezone: UTC}}\n"))
            + channel_yaml("b", b, models=["m"], extra="    pricing: {input: 0.8, output: 1.6}\n"))


def test_an_off_peak_discount_routes_and_prices_while_its_window_holds(tmp_path, fakes):
    a, b = fakes
    r = Router(tmp_path, config(a, b, window_around_now(90)))
    try:
        resp = chat(r)
        # a at half price (0.5/1.0) is cheaper than b (0.8/1.6).
        assert resp.headers["x-router-channel"] == "a"
        u = resp.json()["usage"]
        assert resp.headers["x-router-cost"] == usd_text(cost(u["prompt_tokens"], u["completion_tokens"], 1.0, 2.0, 0.5))
        ch = request(r.cp_port, "GET", "/admin/v1/channels",
                     headers={"authorization": "Bearer " + (tmp_path / "data" / "admin.token").read_text().strip()})
        a_doc = next(c for c in ch.json()["channels"] if c["id"] == "a")
        assert a_doc["pricing_policies"] == ["off-peak"] and a_doc["price_multiplier"] == 0.5, a_doc

        # The window moves away from now: a is back at full price, b is cheaper.
        r.write_config(config(a, b, window_away_from_now()))
        wait_for(lambda: chat(r).headers["x-router-channel"] == "b", timeout=15, what="b after the window closed")
        resp = chat(r)
        u = resp.json()["usage"]
        assert resp.headers["x-router-cost"] == usd_text(cost(u["prompt_tokens"], u["completion_tokens"], 0.8, 1.6))
    finally:
        r.stop()


def test_a_surcharge_applies_once_the_days_tokens_pass_its_threshold(tmp_path, fakes):
    a, _ = fakes
    cfg = ("channels:\n" + channel_yaml("a", a, models=["m"], extra=(
        "    pricing: {input: 1.0, output: 2.0}\n"
        "    pricing_policies:\n"
        "      - name: heavy-use\n        multiplier: 2\n        after_tokens_per_day: 100\n")))
    r = Router(tmp_path, cfg)
    try:
        first = chat(r)
        u = first.json()["usage"]
        assert u["prompt_tokens"] + u["completion_tokens"] > 100
        assert first.headers["x-router-cost"] == usd_text(cost(u["prompt_tokens"], u["completion_tokens"], 1.0, 2.0))
        # The control plane counts the channel's recorded tokens (every 10 s) and
        # republishes its prices doubled.
        doubled = usd_text(cost(u["prompt_tokens"], u["completion_tokens"], 1.0, 2.0, 2.0))
        wait_for(lambda: chat(r).headers["x-router-cost"] == doubled, timeout=30, interval=0.5,
                 what="the surcharge in force")
        assert "heavy-use" in (tmp_path / "control-plane.log").read_text()
    finally:
        r.stop()


def test_a_bad_policy_is_refused_with_its_reason(tmp_path):
    cfg = tmp_path / "bad.yaml"
    for policy, reason in (
        ("{name: x, multiplier: 0.5}", "needs a time_window"),
        ("{name: x, multiplier: -1, after_tokens_per_day: 5}", "multiplier"),
        ("{name: x, multiplier: 0.5, time_window: {from: '25:00', to: '01:00'}}", "25:00"),
        ("{name: x, multiplier: 0.5, time_window: {from: '01:00', to: '02:00', timezone: Mars/Base}}", "Mars/Base"),
        ("{name: x, multiplier: 0.5, time_window: {from: '01:00', to: '02:00', days: [funday]}}", "funday"),
    ):
        cfg.write_text("channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n    discover: false\n"
                       f"    configured_models: [m]\n    pricing_policies: [{policy}]\n")
        out = subprocess.run([SAR_BIN, "check", "--config", str(cfg)], capture_output=True, text=True)
        assert out.returncode != 0, policy
        assert reason in out.stderr + out.stdout, (policy, out.stderr)
        assert "panicked" not in out.stderr
