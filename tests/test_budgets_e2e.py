"""Budgets through a real Envoy: a global budget of a few cents is spent by a
paid-only model, which then gets 429 budget_exceeded; a model with a free
channel and a paid fallback no longer reaches the paid one (its failing free
channel's error stands); a second Envoy on the same control plane refuses once
the first has spent the budget; alerts are raised at the threshold and when spent,
listed and acknowledged; a refusing budget on one token refuses that token's
requests and no one else's. The OpenAI SDK is the client."""
import json
import time

import openai
import pytest

from harness import Fake, Router, channel_yaml, request, wait_for

PICO = 10 ** 12
# 1,000 USD per 1M tokens: a thousandth of a dollar a token, so a short request
# costs a few cents.
PRICE = "    pricing: {input: 1000, output: 1000}\n"
MESSAGES = [{"role": "user", "content": "hello there"}]


def client(r, key="unused"):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{r.api_port}/v1", api_key=key, max_retries=0, timeout=20)


def admin(r, method, path):
    return request(r.cp_port, method, path, headers=r.admin_headers())


@pytest.fixture
def fakes():
    free, paid = Fake("FREE", ["m"]), Fake("PAID", ["m", "paidonly"])
    yield free, paid
    free.stop()
    paid.stop()


def test_a_spent_budget_leaves_only_free_channels_and_refuses_paid_only_models(tmp_path, fakes):
    free, paid = fakes
    cfg = ("channels:\n"
           + channel_yaml("free", free, models=["m"], priority=1, extra="    tags: [free]\n")
           + channel_yaml("paid", paid, models=["m", "paidonly"], priority=2, extra=PRICE)
           + "budgets:\n  - {id: monthly, limit_usd: 0.1, period: month, alert_at: 0.5}\n")
    r = Router(tmp_path, cfg)
    try:
        c = client(r)
        costs, refused = [], None
        for _ in range(10):
            try:
                resp = c.chat.completions.with_raw_response.create(model="paidonly", messages=MESSAGES, max_tokens=4)
                costs.append(float(resp.headers["x-router-cost"]))
            except openai.RateLimitError as e:
                refused = e
                break
        assert refused is not None, costs
        body = refused.response.json()["error"]
        assert body["code"] == "budget_exceeded" and "monthly" in body["message"], body
        # Never past the limit: each request held what it could cost before it went.
        assert 0.05 < sum(costs) <= 0.1, costs
        served = len(paid.requests())
        assert served == len(costs)

        # The free channel fails; its paid fallback is over budget, so the
        # free channel's failure stands and the paid channel sees nothing.
        free.behave(status=503)
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
        assert e.value.status_code == 503
        assert len(paid.requests()) == served
        free.behave()
        resp = c.chat.completions.with_raw_response.create(model="m", messages=MESSAGES, max_tokens=4)
        assert resp.headers["x-router-channel"] == "free"

        # The control plane's view: the sum of the records, and the alerts.
        # (Records reach the store in batches: the sum catches up with every answer.)
        def budget():
            b = admin(r, "GET", "/admin/v1/budgets").json()["data"][0]
            return b if abs(b["spent_usd"] - sum(costs)) < 1e-9 else None
        b = wait_for(budget, timeout=15)
        assert b["id"] == "monthly" and b["limit_usd"] == 0.1 and b["committed_usd"] <= 0.1

        def alerts():
            got = admin(r, "GET", "/admin/v1/alerts").json()["data"]
            kinds = {a["kind"] for a in got}
            return got if "budget_threshold" in kinds else None
        got = wait_for(alerts, timeout=15)
        threshold = next(a for a in got if a["kind"] == "budget_threshold")
        assert threshold["subject"] == "monthly" and "monthly" in threshold["message"]
        ack = admin(r, "POST", f"/admin/v1/alerts/{threshold['id']}/ack")
        assert ack.status == 200, ack
        assert threshold["id"] not in {a["id"] for a in admin(r, "GET", "/admin/v1/alerts").json()["data"]}
        everything = admin(r, "GET", "/admin/v1/alerts?all=true").json()["data"]
        assert next(a for a in everything if a["id"] == threshold["id"])["acked_ms"] > 0
        assert admin(r, "POST", "/admin/v1/alerts/nope/ack").status == 404
        assert "alert budget_threshold" in (tmp_path / "control-plane.log").read_text()
    finally:
        r.stop()


def test_a_refusing_budget_on_a_token_refuses_only_that_token(tmp_path, fakes):
    free, paid = fakes
    cfg = ("auth:\n  enabled: true\n  api_tokens:\n"
           "    - {id: capped, token: sk-capped-token-0001}\n"
           "    - {id: open, token: sk-open-token-00002}\n"
           + "channels:\n"
           + channel_yaml("free", free, models=["m"], priority=1, extra="    tags: [free]\n")
           + channel_yaml("paid", paid, models=["m", "paidonly"], priority=2, extra=PRICE)
           + "budgets:\n  - {id: capped_day, limit_usd: 0.05, period: day, token: capped, when_exceeded: refuse}\n")
    r = Router(tmp_path, cfg)
    try:
        capped, other = client(r, "sk-capped-token-0001"), client(r, "sk-open-token-00002")
        spent = 0.0
        with pytest.raises(openai.RateLimitError) as e:
            for _ in range(10):
                resp = capped.chat.completions.with_raw_response.create(
                    model="paidonly", messages=MESSAGES, max_tokens=4)
                spent += float(resp.headers["x-router-cost"])
        assert e.value.response.json()["error"]["code"] == "budget_exceeded"
        assert spent <= 0.05
        # Refused, even for a free model; the other token goes on.
        with pytest.raises(openai.RateLimitError):
            capped.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
        assert other.chat.completions.create(model="paidonly", messages=MESSAGES, max_tokens=4).choices
    finally:
        r.stop()


def test_budgets_are_checked_at_load(tmp_path):
    import subprocess
    from harness import SAR_BIN
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n"
                   "budgets:\n  - {id: b, limit_usd: 1, channel: nope}\n")
    out = subprocess.run([SAR_BIN, "check", "--config", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "budgets[0]" in out.stderr and "nope" in out.stderr, out.stderr


def test_a_low_balance_is_shown_and_raises_an_alert(tmp_path, fakes):
    free, paid = fakes
    paid.behave(credits={"total_credits": 5, "total_usage": 4.5})
    cfg = ("channels:\n"
           + channel_yaml("credits", paid, models=["m"], key="sk-or-key", extra="    provider: openrouter\n    low_balance: 1\n"))
    r = Router(tmp_path, cfg)
    try:
        def balance():
            chans = admin(r, "GET", "/admin/v1/channels").json()["channels"]
            return next(c for c in chans if c["id"] == "credits")["balance"]
        b = wait_for(balance, timeout=15)
        assert b["amount"] == 0.5 and b["currency"] == "USD"
        got = wait_for(lambda: [a for a in admin(r, "GET", "/admin/v1/alerts").json()["data"]
                                if a["kind"] == "low_balance"], timeout=15)
        assert got[0]["subject"] == "credits" and "0.5" in got[0]["message"]
    finally:
        r.stop()


def test_two_envoys_on_one_control_plane_share_a_budget(tmp_path, fakes):
    from test_rate_limits_e2e import second_envoy
    free, paid = fakes
    cfg = ("channels:\n"
           + channel_yaml("paid", paid, models=["paidonly"], priority=2, extra=PRICE)
           + "budgets:\n  - {id: shared, limit_usd: 0.1, period: day}\n")
    r = Router(tmp_path, cfg)
    proc = None
    try:
        proc, api2 = second_envoy(r, tmp_path)
        one, two = client(r), openai.OpenAI(base_url=f"http://127.0.0.1:{api2}/v1", api_key="unused",
                                            max_retries=0, timeout=20)
        spent = 0.0
        with pytest.raises(openai.RateLimitError):
            for _ in range(10):
                resp = one.chat.completions.with_raw_response.create(model="paidonly", messages=MESSAGES, max_tokens=4)
                spent += float(resp.headers["x-router-cost"])
        # The other Envoy learns the sum through the table within a couple of seconds.
        def refused():
            try:
                two.chat.completions.create(model="paidonly", messages=MESSAGES, max_tokens=4)
                return False
            except openai.RateLimitError:
                return True
        served_before = len(paid.requests())
        wait_for(lambda: admin(r, "GET", "/admin/v1/budgets").json()["data"][0]["spent_usd"] >= spent - 1e-9,
                 timeout=15)
        time.sleep(1.5)  # the summed table reaches the second Envoy
        assert refused()
        # Everything both Envoys let through stays within the limit.
        total = admin(r, "GET", "/admin/v1/budgets").json()["data"][0]["spent_usd"]
        assert total <= 0.1 + 1e-9 and len(paid.requests()) == served_before
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=10)
        r.stop()
