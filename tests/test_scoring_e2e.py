"""Scoring and strategies through a real Envoy."""
import time

import pytest

from harness import Fake, Router, request, wait_for, assert_error


@pytest.fixture
def two(tmp_path):
    made = []

    def make(config, models_a, models_b, **kw):
        a, b = Fake("A", models_a), Fake("B", models_b)
        made.extend([a, b])
        r = Router(tmp_path, config.format(a=a.base_url, b=b.base_url), **kw)
        made.append(r)
        return a, b, r

    yield make
    for x in made:
        x.stop()


def channels_served(r, model, n):
    counts = {}
    for _ in range(n):
        resp = r.chat(model)
        assert resp.status == 200, resp
        counts[resp.headers["x-router-channel"]] = counts.get(resp.headers["x-router-channel"], 0) + 1
    return counts


def test_speed_optimized_moves_traffic_to_the_fast_channel(two):
    a, b, r = two("routing:\n  default_strategy: speed_optimized\nchannels:\n"
                  "  - {{id: a, base_url: '{a}'}}\n  - {{id: b, base_url: '{b}'}}\n", ["m"], ["m"])
    a.behave(first_byte_delay=0.3)
    # Warm-up: no measurements, equal scores, traffic shared.
    warm = channels_served(r, "m", 6)
    assert warm.get("a") and warm.get("b"), warm
    time.sleep(1.5)  # workers fold their measurements into the shared averages
    after = channels_served(r, "m", 10)
    assert after.get("b", 0) >= 9, after
    resp = r.chat("m")
    assert resp.headers["x-router-strategy"] == "speed_optimized"
    assert 0.0 < float(resp.headers["x-router-score"]) <= 1.0


def test_strategy_switch_at_run_time(two):
    cfg = ("channels:\n"
           "  - {{id: a, base_url: '{a}', pricing: {{input: 0.1, output: 0.2}}}}\n"
           "  - {{id: b, base_url: '{b}', pricing: {{input: 5, output: 15}}}}\n")
    a, b, r = two(cfg, ["chat-8b"], ["chat-70b"])
    resp = r.chat("tag:chat")
    assert resp.headers["x-router-channel"] == "a" and resp.headers["x-router-strategy"] == "cost_first"
    token = (r.dir / "data" / "admin.token").read_text().strip()
    auth = {"authorization": f"Bearer {token}"}
    bad = request(r.cp_port, "PUT", "/admin/v1/strategy", {"strategy": "fastest"}, headers=auth)
    assert "cost_first" in assert_error(bad, 400, "unknown_strategy")["message"]
    ok = request(r.cp_port, "PUT", "/admin/v1/strategy", {"strategy": "quality_optimized"}, headers=auth)
    assert ok.status == 200, ok
    wait_for(lambda: r.get("/health").json()["strategy"] == "quality_optimized", timeout=3, what="strategy in /health")
    resp = r.chat("tag:chat")
    assert resp.headers["x-router-channel"] == "b" and resp.headers["x-router-model"] == "chat-70b"
    assert request(r.cp_port, "GET", "/admin/v1/strategy", headers=auth).json() == {"strategy": "quality_optimized"}


def test_equal_channels_share_by_weight_and_priority_wins_ties(two):
    a, b, r = two("channels:\n  - {{id: a, base_url: '{a}', weight: 3}}\n  - {{id: b, base_url: '{b}', weight: 1}}\n",
                  ["m"], ["m"])
    counts = channels_served(r, "m", 40)
    assert 27 <= counts.get("a", 0) <= 33, counts
    r.write_config("channels:\n"
                   f"  - {{id: a, base_url: '{a.base_url}', weight: 3, priority: 2}}\n"
                   f"  - {{id: b, base_url: '{b.base_url}', weight: 1, priority: 1}}\n")
    wait_for(lambda: channels_served(r, "m", 4) == {"b": 4}, timeout=3, what="priority decides a tie")


def test_debug_headers_can_be_turned_off(two):
    a, b, r = two("routing:\n  debug_headers: false\nchannels:\n  - {{id: a, base_url: '{a}'}}\n", ["m"], ["m"])
    resp = r.chat("m")
    assert resp.status == 200
    assert not [h for h in resp.headers if h.startswith("x-router-")], resp.headers


def test_filters_narrow_searches_and_explain_agrees(two):
    cfg = ("routing:\n  model_filters:\n    min_context_length: 16000\n"
           "model_groups:\n  cheap-chat:\n    query: tag:chat\n    filters:\n      max_cost_per_1k: 0.001\n"
           "channels:\n"
           "  - {{id: a, base_url: '{a}', priority: 1, pricing: {{models: {{chat-4k: {{input: 0.1, output: 0.1}},"
           " chat-128k: {{input: 10, output: 30}}}}}}}}\n"
           "  - {{id: b, base_url: '{b}', priority: 2, pricing: {{input: 0.2, output: 0.4}}}}\n")
    a, b, r = two(cfg, ["chat-4k", "chat-128k"], ["chat-32k"])
    # The 4k model is cheapest but too small for routing.model_filters.
    resp = r.chat("tag:chat")
    assert resp.status == 200 and resp.headers["x-router-model"] == "chat-32k", resp.headers
    # Named, it is served all the same.
    assert r.chat("chat-4k").headers["x-router-model"] == "chat-4k"
    # The group's cost cap leaves out the dear 128k model.
    resp = r.chat("cheap-chat")
    assert resp.status == 200 and resp.headers["x-router-model"] == "chat-32k"
    token = (r.dir / "data" / "admin.token").read_text().strip()
    v = request(r.cp_port, "POST", "/admin/v1/explain", {"model": "tag:chat"},
                headers={"authorization": f"Bearer {token}"}).json()
    assert [c["model"] for c in v["candidates"]][0] == "chat-32k"
    assert any(x["model"] == "chat-4k" and "model_filters" in x["reason"] for x in v["excluded"])
