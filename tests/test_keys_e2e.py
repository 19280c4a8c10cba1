"""Channels with several keys, through a real Envoy: a revoked key (401) takes
out that key and not the channel, which keeps serving with its other key;
`fill_first` spends one key's free window before the next key's, then moves to
the paid channel without a 429; `round_robin` spreads requests over the keys;
keys appear in the status API, records and headers only as their ids."""
import json
import time

import openai
import pytest

from harness import Fake, Router, channel_yaml, request, wait_for


def client(r):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{r.api_port}/v1", api_key="unused", max_retries=0, timeout=20)


def ask(c):
    resp = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return resp.headers["x-router-channel"], resp.headers.get("x-router-key")


def keys_used(fake):
    return [(x["headers"].get("authorization"), x["status"]) for x in fake.requests()]


def keyed(cid, fake, keys, rotation, priority=1, extra=""):
    entries = "".join(f"      - {{id: {i}, key: {k}}}\n" for i, k in keys)
    return channel_yaml(cid, fake, models=["m"], priority=priority,
                        extra=f"    api_keys:\n{entries}    key_rotation: {rotation}\n{extra}")


def test_a_revoked_key_takes_out_that_key_and_the_channel_serves_with_the_other(tmp_path):
    multi, other = Fake("MULTI", ["m"], keys=["sk-first", "sk-good"]), Fake("OTHER", ["m"])
    r = None
    try:
        cfg = ("channels:\n" + keyed("multi", multi, [("first", "sk-first"), ("good", "sk-good")], "fill_first")
               + channel_yaml("other", other, models=["m"], priority=5))
        r = Router(tmp_path, cfg)
        c = client(r)
        assert ask(c) == ("multi", "first")
        # The provider revokes the first key: the next request meets its 401 and
        # fails over to the channel's other key within the same request.
        multi.control("keys", {"keys": ["sk-good"]})
        multi.reset()
        for _ in range(4):
            assert ask(c) == ("multi", "good")
        assert keys_used(multi) == [("Bearer sk-first", 401)] + [("Bearer sk-good", 200)] * 4
        assert other.requests() == []

        def status():
            s = request(r.cp_port, "GET", "/admin/v1/channels", headers=r.admin_headers())
            return next(x for x in s.json()["channels"] if x["id"] == "multi")
        # The status API shows the key out by its id, never a key.
        wait_for(lambda: {k["id"]: k["state"] for k in status()["keys"]} == {"first": "out", "good": "ok"},
                 timeout=10)
        ch = status()
        assert ch["state"] == "ok" and ch["key_rotation"] == "fill_first"
        assert "sk-first" not in json.dumps(ch) and "sk-good" not in json.dumps(ch)

        def records():
            got = request(r.cp_port, "GET", "/admin/v1/usage?limit=100", headers=r.admin_headers()).json()["data"]
            return got if len(got) >= 5 else None
        recs = wait_for(records, timeout=15)
        assert {x["channel"] for x in recs} == {"multi"}
        assert "sk-" not in json.dumps(recs)
    finally:
        if r:
            r.stop()
        multi.stop()
        other.stop()


def test_a_key_the_control_plane_finds_rejected_is_a_last_resort(tmp_path):
    multi = Fake("MULTI", ["m"], keys=["sk-good"])
    r = None
    try:
        cfg = "channels:\n" + keyed("multi", multi, [("bad", "sk-bad"), ("good", "sk-good")], "fill_first")
        r = Router(tmp_path, cfg)
        c = client(r)

        def status():
            s = request(r.cp_port, "GET", "/admin/v1/channels", headers=r.admin_headers())
            return next(x for x in s.json()["channels"] if x["id"] == "multi")
        wait_for(lambda: status()["keys"][0]["state"] == "key_rejected", timeout=10)
        assert status()["state"] == "ok"
        time.sleep(0.5)
        assert [ask(c) for _ in range(3)] == [("multi", "good")] * 3
        assert [k for k, _ in keys_used(multi)] == ["Bearer sk-good"] * 3
    finally:
        if r:
            r.stop()
        multi.stop()


def test_fill_first_spends_each_keys_window_then_the_paid_channel_and_round_robin_spreads(tmp_path):
    free, paid = Fake("FREE", ["m"], keys=["sk-a", "sk-b"]), Fake("PAID", ["m"])
    r = None
    try:
        limits = "    limits: {requests_per_minute: 2, provider_headers: false}\n"
        cfg = ("channels:\n" + keyed("free", free, [("a", "sk-a"), ("b", "sk-b")], "fill_first", extra=limits)
               + channel_yaml("paid", paid, models=["m"], priority=5))
        r = Router(tmp_path, cfg)
        c = client(r)
        got = [ask(c) for _ in range(5)]
        assert got == [("free", "a"), ("free", "a"), ("free", "b"), ("free", "b"), ("paid", None)]
        assert [s for _, s in keys_used(free)] == [200] * 4
        s = request(r.cp_port, "GET", "/admin/v1/channels", headers=r.admin_headers()).json()
        ch = next(x for x in s["channels"] if x["id"] == "free")
        wait_for(lambda: all(
            k["limits"]["requests_in_window"] == 2
            for k in next(x for x in request(r.cp_port, "GET", "/admin/v1/channels", headers=r.admin_headers())
                          .json()["channels"] if x["id"] == "free")["keys"]), timeout=10)
        assert [k["id"] for k in ch["keys"]] == ["a", "b"]
        # explain's plan from Envoy's reported counts leaves both keys out, saying why.
        def plan_now():
            e = request(r.cp_port, "POST", "/admin/v1/explain", {"model": "m"}, headers=r.admin_headers()).json()
            return e["plan_now"]
        p = wait_for(lambda: (lambda p: p if len(p.get("left_out", [])) == 2 else None)(plan_now()), timeout=10)
        assert [a["channel"] for a in p["attempts"]] == ["paid"]
        assert all("at its request limit" in x for x in p["left_out"]), p
        assert {x.split(" ")[0] for x in p["left_out"]} == {"free/a", "free/b"}

        # Round robin: the keys take turns.
        r.write_config(cfg.replace("fill_first", "round_robin").replace(limits, ""))
        wait_for(lambda: "round_robin" in json.dumps(
            request(r.cp_port, "GET", "/admin/v1/channels", headers=r.admin_headers()).json()), timeout=10)
        time.sleep(1.5)  # the table reaches Envoy
        free.reset()
        keys = [ask(c)[1] for _ in range(6)]
        assert sorted(keys) == ["a", "a", "a", "b", "b", "b"], keys
    finally:
        if r:
            r.stop()
        free.stop()
        paid.stop()
