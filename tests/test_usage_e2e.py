"""Usage records through a real Envoy: one record per chat request, however it
ends, with the tokens the providers reported and the cost the configured prices
give, delivered exactly once across a control-plane crash; the statistics API
agrees with the records; a client that did not ask for the usage event never
sees it. On SQLite (the default) and on a real PostgreSQL server."""
import http.client
import json
import signal
import subprocess
import time

import pytest

from harness import SAR_BIN, Fake, Router, channel_yaml, request, wait_for

PICO = 10 ** 12
# USD per 1M tokens, as configured; picodollars per token = price * 1e6.
PRICES = {"a": (0.5, 1.5), "b": (3.0, 15.0)}


def pico_per_token(usd_per_million):
    return round(usd_per_million * 1_000_000)


def expected_cost(channel, prompt, completion):
    i, o = PRICES[channel]
    return prompt * pico_per_token(i) + completion * pico_per_token(o)


def fake_prompt_tokens(body_len):
    """What tests/fake_provider.py reports."""
    return max(1, body_len // 4)


@pytest.fixture
def stack():
    made = []

    def track(x):
        made.append(x)
        return x

    yield track
    for x in reversed(made):
        x.stop()


def admin(r):
    return {"authorization": "Bearer " + (r.dir / "data" / "admin.token").read_text().strip()}


def all_records(r):
    out, cursor = [], None
    while True:
        path = "/admin/v1/usage?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        resp = request(r.cp_port, "GET", path, headers=admin(r))
        assert resp.status == 200, resp
        page = resp.json()
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def chat(port, content, stream=False, include_usage=None, model="m", read_events=None):
    """(status, headers, body or events). `read_events`: leave after that many events."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    if include_usage is not None:
        body["stream_options"] = {"include_usage": include_usage}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"content-type": "application/json"})
    resp = conn.getresponse()
    headers = {k.lower(): v for k, v in resp.getheaders()}
    if not stream or resp.status != 200:
        data = resp.read()
        conn.close()
        return resp.status, headers, json.loads(data) if data else None
    events, comments = [], []
    for line in resp:
        if line.startswith(b"data: {"):
            events.append(json.loads(line[6:]))
            if read_events is not None and len(events) >= read_events:
                conn.sock.close()  # the client leaves mid-stream
                break
        elif line.startswith(b":"):
            comments.append(line.decode().strip())
    conn.close()
    return resp.status, headers, (events, comments)


def setup_router(tmp_path, stack, storage_url=None):
    a = stack(Fake("A", ["m", "m-failing"]))
    b = stack(Fake("B", ["m"]))
    cfg = (f"storage:\n  url: {storage_url}\n" if storage_url else "") + "channels:\n"
    for cid, fake, prio in (("a", a, 1), ("b", b, 2)):
        i, o = PRICES[cid]
        cfg += channel_yaml(cid, fake, priority=prio, models=["m", "m-failing"] if cid == "a" else ["m"],
                            extra=f"    pricing: {{input: {i}, output: {o}}}\n")
    r = stack(Router(tmp_path, cfg, control_plane_extra="  health_check_interval: 3600\n"))
    return a, b, r


def run_mixed_traffic(tmp_path, stack, storage_url=None):
    a, b, r = setup_router(tmp_path, stack, storage_url)
    # Every third request to A fails over to B (too few to open A's breaker).
    failing_a = {"m": {"fail_every": 3, "status": 500, "events": 4, "event_delay": 0}, "m-failing": {"status": 500}}
    a.behave(per_model=failing_a)
    b.behave(events=4, event_delay=0)
    sent = []  # (kind, content) for each request
    n = 200

    def one(i):
        # Each request's message has its own length, so its token count names it.
        content = "x" * (40 * i + 7)
        if i == 17:
            status, _, body = chat(r.api_port, content, model="no-such-model")
            assert status == 404, body
            return "unknown", content, None
        if i == 33:
            status, _, body = chat(r.api_port, content, model="m-failing")
            assert status == 503 and body["error"]["code"] == "all_channels_failed", body
            return "failed", content, None
        if i == 71:
            a.behave(per_model={"m": {"events": 40, "event_delay": 0.05}, "m-failing": {"status": 500}})
            status, _, (events, _) = chat(r.api_port, content, stream=True, read_events=2)
            a.behave(per_model=failing_a)
            assert status == 200 and len(events) == 2
            return "left", content, None
        kind = ("json", "stream", "stream_usage")[i % 3]
        status, headers, body = chat(r.api_port, content, stream=kind != "json",
                                     include_usage=True if kind == "stream_usage" else None)
        assert status == 200, body
        if kind == "json":
            ch = headers["x-router-channel"]
            u = body["usage"]
            assert headers["x-router-cost"] == usd_text(expected_cost(ch, u["prompt_tokens"], u["completion_tokens"]))
        else:
            events, comments = body
            usage_events = [e for e in events if "usage" in e and not e["choices"]]
            if kind == "stream":
                assert usage_events == [], "a client that did not ask gets no usage event"
            else:
                assert len(usage_events) == 1, "a client that asked gets it"
            assert any(c.startswith(": x-router-cost ") for c in comments), comments
        return kind, content, headers.get("x-router-channel")

    for i in range(n):
        if i == 100:
            # The control plane dies hard, requests go on, it comes back.
            r.cp.send_signal(signal.SIGKILL)
            r.cp.wait()
        if i == 150:
            r.start_control_plane()
        sent.append(one(i))
    return a, b, r, sent


def usd_text(pico):
    whole, frac = divmod(pico, PICO)
    return str(whole) if frac == 0 else f"{whole}.{f'{frac:012d}'.rstrip('0')}"


def check_records(a, b, r, sent):
    records = wait_for(lambda: (lambda rs: rs if len(rs) >= 200 else None)(all_records(r)), timeout=30,
                       what="200 usage records")
    time.sleep(1.5)  # nothing more may arrive
    records = all_records(r)
    assert len(records) == 200, len(records)
    assert len({x["id"] for x in records}) == 200, "no record twice"

    # What the providers reported, by the prompt tokens that name each request.
    reported = {}
    for fake, cid in ((a, "a"), (b, "b")):
        for q in fake.requests():
            if q["status"] == 200:
                reported.setdefault(fake_prompt_tokens(q["body_len"]), []).append((cid, q))
    by_kind = {}
    for rec in records:
        kind = None
        if rec.get("error") == "model_not_found":
            kind = "unknown"
        elif rec.get("error") == "all_channels_failed":
            kind = "failed"
        elif rec.get("error") == "stream_interrupted":
            kind = "left"
        by_kind.setdefault(kind, []).append(rec)
        if kind:
            continue
        assert not rec["usage_estimated"], rec
        assert rec["prompt_tokens"] in reported, json.dumps(rec)
        [(cid, q)] = reported[rec["prompt_tokens"]]
        assert rec["channel"] == cid and rec["model_used"] == "m" and rec["model_requested"] == "m"
        completion = 4
        assert rec["completion_tokens"] == completion, rec
        assert rec["cost_pico"] == expected_cost(cid, rec["prompt_tokens"], completion), rec
        assert rec["status"] == 200 and rec["latency_ms"] >= 0 and rec["ttft_ms"] is not None
        assert rec["stream"] == q["stream"]
        assert rec["attempts"] == (2 if cid == "b" else 1)
    assert len(by_kind["unknown"]) == 1 and by_kind["unknown"][0]["status"] == 404
    assert by_kind["unknown"][0]["model_requested"] == "no-such-model"
    [failed] = by_kind["failed"]
    assert failed["status"] == 503 and failed["prompt_tokens"] == 0 and failed["cost_pico"] in (None, 0)
    [left] = by_kind["left"]
    assert left["usage_estimated"] and left["completion_tokens"] >= 2 and left["prompt_tokens"] > 0
    assert len(by_kind[None]) == 197
    assert sum(1 for x in by_kind[None] if x["channel"] == "b") > 30, "failovers happened"
    return records


def check_statistics(r, records):
    s = request(r.cp_port, "GET", "/admin/v1/stats/summary?period=day", headers=admin(r)).json()
    assert s["requests"] == 200
    assert s["prompt_tokens"] == sum(x["prompt_tokens"] for x in records)
    assert s["completion_tokens"] == sum(x["completion_tokens"] for x in records)
    assert s["cost_pico"] == sum(x["cost_pico"] or 0 for x in records)
    assert s["succeeded"] == 197 and s["failed"] == 3
    for by in ("model", "channel", "provider", "client"):
        bd = request(r.cp_port, "GET", f"/admin/v1/stats/breakdown?by={by}&period=month", headers=admin(r)).json()
        assert sum(row["requests"] for row in bd["data"]) == 200
        assert sum(row["cost_pico"] for row in bd["data"]) == s["cost_pico"]
        costs = [row["cost_pico"] for row in bd["data"]]
        assert costs == sorted(costs, reverse=True), "most expensive first"
    channels = request(r.cp_port, "GET", "/admin/v1/stats/breakdown?by=channel&period=week", headers=admin(r)).json()
    by_channel = {row["key"]: row for row in channels["data"]}
    assert by_channel["b"]["cost_pico"] == sum(x["cost_pico"] or 0 for x in records if x.get("channel") == "b")
    series = request(r.cp_port, "GET", "/admin/v1/stats/timeseries?bucket=hour", headers=admin(r)).json()
    assert sum(bk["requests"] for bk in series["data"]) == 200
    assert sum(bk["cost_pico"] for bk in series["data"]) == s["cost_pico"]
    assert all(bk["p50_latency_ms"] is not None for bk in series["data"])
    fc = request(r.cp_port, "GET", "/admin/v1/stats/forecast", headers=admin(r)).json()
    assert fc["month_end_usd"] >= fc["cost_so_far_usd"] > 0
    sv = request(r.cp_port, "GET", "/admin/v1/stats/savings", headers=admin(r)).json()
    assert set(sv["strategies"]) >= {"cost_first", "free_first", "speed_optimized"} and sv["advice"]


def check_envoy_stats(r, records):
    def counted():
        p = r.prometheus()
        return p if 'sar_channel_prompt_tokens{channel="a"}' in p else None

    prom = wait_for(counted, timeout=5, what="token stats")
    values = {}
    for line in prom.splitlines():
        if line.startswith("sar_channel_") and "{" in line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    for ch in ("a", "b"):
        mine = [x for x in records if x.get("channel") == ch and not x["usage_estimated"]]
        assert values[f'sar_channel_completion_tokens{{channel="{ch}"}}'] >= sum(x["completion_tokens"] for x in mine)
        assert values.get(f'sar_channel_cost_micro_usd{{channel="{ch}"}}', 0) > 0
    assert "sar_channel_time_to_first_token_ms_bucket" in prom


def test_every_request_is_recorded_once_exactly_across_a_control_plane_crash(tmp_path, stack):
    a, b, r, sent = run_mixed_traffic(tmp_path, stack)
    records = check_records(a, b, r, sent)
    check_statistics(r, records)
    check_envoy_stats(r, records)


def test_the_same_on_postgresql(tmp_path, stack, postgres):
    a, b, r, sent = run_mixed_traffic(tmp_path, stack, storage_url=postgres.new_database())
    records = check_records(a, b, r, sent)
    check_statistics(r, records)


def test_local_errors_are_recorded_and_listed_in_pages(tmp_path, stack):
    a, b, r = setup_router(tmp_path, stack)
    for _ in range(3):
        assert request(r.api_port, "POST", "/v1/chat/completions", b"{not json",
                       headers={"content-type": "application/json"}).status == 400
    assert request(r.api_port, "GET", "/v1/models").status == 200  # not a chat request: no record
    wait_for(lambda: len(all_records(r)) == 3, timeout=10, what="three records")
    page = request(r.cp_port, "GET", "/admin/v1/usage?limit=2", headers=admin(r)).json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    rest = request(r.cp_port, "GET", f"/admin/v1/usage?limit=2&cursor={page['next_cursor']}", headers=admin(r)).json()
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None
    assert all(x["error"] == "invalid_json" and x["status"] == 400 for x in page["data"] + rest["data"])
    assert request(r.cp_port, "GET", "/admin/v1/usage").status == 401
    assert request(r.cp_port, "POST", "/v1/usage", b"{}").status == 401
    # The day's records as JSON lines, read from the same store the control plane writes.
    out = tmp_path / "day.jsonl"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    done = subprocess.run([SAR_BIN, "usage", "export", "--config", str(r.config_path), "--day", today,
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(x["id"] for x in page["data"] + rest["data"])
    assert "3 records" in done.stderr
    bad = subprocess.run([SAR_BIN, "usage", "export", "--config", str(r.config_path), "--day", "2026-13-01"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "2026-13-01" in bad.stderr and "panicked" not in bad.stderr
