"""Live administration through the control plane's admin API, with a real
Envoy: channels, keys, aliases, prices, groups and client tokens changed at
run time apply within about a second without restarting Envoy, survive a
control-plane restart, are audited with keys masked, and a viewer token reads
but never writes."""
import json
import os
import shutil
import subprocess
import time

import openai
import pytest

from harness import SAR_BIN, Fake, Router, channel_yaml, request, wait_for

VIEWER = "viewer-token-0123456789"
KEY_B = "sk-admin-b-secret-1"


@pytest.fixture
def stack(tmp_path):
    a = Fake("A", ["m1", "m1-new"])
    b = Fake("B", ["only-b"], keys=[KEY_B])
    cfg = "channels:\n" + channel_yaml("a", a, models=["m1", "m1-new"], key="sk-file-a")
    r = Router(tmp_path, cfg,
               control_plane_extra=f"  admin_tokens:\n    - {{id: dash, token: {VIEWER}, role: viewer}}\n")
    yield a, b, r
    r.stop()
    a.stop()
    b.stop()


def admin(r, method, path, body=None, token=None):
    headers = {"authorization": f"Bearer {token}"} if token else r.admin_headers()
    return request(r.cp_port, method, path, body, headers=headers)


def envoy_identity(r):
    assert r.envoy.poll() is None, "Envoy exited"
    epoch = [line for line in r.stats().splitlines() if line.startswith("server.hot_restart_epoch:")]
    return r.envoy.pid, epoch


def table_version(r):
    return request(r.cp_port, "GET", "/healthz").json()["table_version"]


def test_a_channel_added_through_the_api_serves_within_2s_and_a_removed_one_never_again(stack):
    a, b, r = stack
    before = envoy_identity(r)
    start = time.time()
    made = admin(r, "POST", "/admin/v1/channels", {
        "id": "b", "base_url": b.base_url, "api_key": KEY_B, "discover": False,
        "configured_models": ["only-b"], "priority": 5})
    assert made.status == 201, made
    assert KEY_B not in made.body.decode(), "the key is never shown"
    assert made.json()["api_key"].startswith("<key-") and made.json()["source"] == "api"
    wait_for(lambda: r.chat("only-b").status == 200, timeout=2.0, interval=0.05, what="the new channel serves")
    took = time.time() - start
    assert took < 2.0, took
    assert r.chat("only-b").headers["x-router-channel"] == "b"
    assert b.requests()[-1]["headers"]["authorization"] == f"Bearer {KEY_B}"
    # Creating it twice is a conflict; a bad one is refused with the reason.
    assert admin(r, "POST", "/admin/v1/channels", {"id": "b", "base_url": b.base_url}).status == 409
    bad = admin(r, "POST", "/admin/v1/channels", {"id": "c", "base_url": "ftp://nowhere", "nonsense": 1})
    assert bad.status == 400 and bad.json()["error"]["code"] in ("invalid_config", "invalid_object"), bad
    # Removed: never chosen again.
    gone = admin(r, "DELETE", "/admin/v1/channels/b")
    assert gone.status == 200, gone
    wait_for(lambda: r.chat("only-b").status == 404, timeout=2.0, what="the removed channel leaves the table")
    seen = len(b.requests())
    for _ in range(10):
        assert r.chat("only-b").status == 404
    assert len(b.requests()) == seen
    assert admin(r, "GET", "/admin/v1/channels/b").status == 404
    assert envoy_identity(r) == before, "Envoy was not restarted"


def test_edits_apply_within_a_second_survive_a_restart_and_export_round_trips(stack, tmp_path):
    a, b, r = stack
    # A file channel patched: an alias, a price, a second key kept by its placeholder.
    shown = admin(r, "GET", "/admin/v1/channels/a").json()
    assert shown["source"] == "file" and shown["api_key"].startswith("<key-")
    patched = admin(r, "PATCH", "/admin/v1/channels/a", {
        "model_aliases": {"std": "m1-new"}, "pricing": {"input": 1.0, "output": 2.0},
        "api_key": shown["api_key"]})
    assert patched.status == 200, patched
    assert patched.json()["source"] == "file+api"
    wait_for(lambda: r.chat("std").status == 200, timeout=1.5, interval=0.05, what="alias applies")
    assert r.chat("std").headers["x-router-model"] == "m1-new"
    assert a.requests()[-1]["headers"]["authorization"] == "Bearer sk-file-a", "the placeholder kept the key"
    # A group made through the API.
    g = admin(r, "POST", "/admin/v1/groups", {"name": "team", "channels": [{"channel": "a", "model": "m1"}]})
    assert g.status == 201, g
    wait_for(lambda: r.chat("team").status == 200, timeout=1.5, interval=0.05, what="group applies")
    # What a read shows can be written back as it is (masked keys included).
    for path in ("/admin/v1/groups/team", "/admin/v1/channels/a"):
        back = admin(r, "PUT", path, admin(r, "GET", path).json())
        assert back.status == 200, (path, back)
    assert r.chat("std").status == 200
    assert a.requests()[-1]["headers"]["authorization"] == "Bearer sk-file-a"
    # The strategy, set through the API, is kept too.
    assert admin(r, "PUT", "/admin/v1/strategy", {"strategy": "speed_optimized"}).status == 200
    version = table_version(r)

    r.stop_control_plane()
    r.start_control_plane()
    wait_for(lambda: table_version(r) == version, timeout=10, what="same table after a restart")
    assert admin(r, "GET", "/admin/v1/strategy").json() == {"strategy": "speed_optimized"}
    assert admin(r, "GET", "/admin/v1/groups/team").json()["channels"][0]["model"] == "m1"
    assert r.chat("std").headers["x-router-model"] == "m1-new"

    # Export: the file with the changes; loaded as the file alone it gives the same table.
    out = tmp_path / "exported.yaml"
    subprocess.run([SAR_BIN, "config", "export", "--config", str(r.config_path), "--out", str(out)], check=True)
    text = out.read_text()
    assert "m1-new" in text and "team" in text and "speed_optimized" in text
    r.stop_control_plane()
    os.replace(out, r.config_path)
    for f in (r.dir / "data").glob("router.db*"):
        f.unlink()
    r.start_control_plane()
    wait_for(lambda: table_version(r) == version, timeout=10, what="the exported file gives the same table")
    assert admin(r, "GET", "/admin/v1/config").json()["changes"] == []


def test_client_tokens_made_and_revoked_through_the_api(tmp_path):
    a = Fake("A", ["m1"])
    cfg = ("auth:\n  enabled: true\n  api_tokens:\n    - {id: file-token, token: sar-file-token-1}\n"
           "channels:\n" + channel_yaml("a", a, models=["m1"]))
    r = Router(tmp_path, cfg)
    try:
        made = admin(r, "POST", "/admin/v1/tokens", {"id": "team-a", "allow": {"models": ["m1"]}})
        assert made.status == 201, made
        token = made.json()["token"]
        assert token.startswith("sar-")
        listed = admin(r, "GET", "/admin/v1/tokens").json()["data"]
        assert {t["id"] for t in listed} == {"file-token", "team-a"}
        assert token not in json.dumps(listed), "a token is shown once, when it is made"
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{r.api_port}/v1", api_key=token, max_retries=0, timeout=10)
        ask = lambda: c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}])  # noqa: E731
        wait_for(lambda: _ok(ask), timeout=2, interval=0.05, what="the new token works")
        assert admin(r, "DELETE", "/admin/v1/tokens/team-a").status == 200
        wait_for(lambda: _refused(ask), timeout=2, interval=0.05, what="the revoked token is refused")
        refused = admin(r, "POST", "/admin/v1/tokens", {"id": "x", "token": "chosen-by-me"})
        assert refused.status == 400
    finally:
        r.stop()
        a.stop()


def _ok(ask):
    try:
        ask()
        return True
    except openai.AuthenticationError:
        return False


def _refused(ask):
    try:
        ask()
        return False
    except openai.AuthenticationError:
        return True


def test_every_change_is_audited_with_keys_masked(stack):
    a, b, r = stack
    assert admin(r, "POST", "/admin/v1/channels", {
        "id": "b", "base_url": b.base_url, "api_key": KEY_B, "discover": False,
        "configured_models": ["only-b"]}).status == 201
    assert admin(r, "PATCH", "/admin/v1/channels/b", {"enabled": False}).status == 200
    assert admin(r, "DELETE", "/admin/v1/channels/b").status == 200
    page = admin(r, "GET", "/admin/v1/audit?kind=channel&name=b")
    assert page.status == 200, page
    assert KEY_B not in page.body.decode()
    entries = page.json()["data"]
    assert [e["action"] for e in entries] == ["delete", "patch", "create"]
    assert all(e["actor"] == "admin" for e in entries)
    create, patch = entries[2], entries[1]
    assert create["before"] is None and create["after"]["api_key"].startswith("<key-")
    assert "enabled" not in patch["before"] and patch["after"]["enabled"] is False
    assert entries[0]["after"] is None
    # Pages: one at a time, following `next`.
    first = admin(r, "GET", "/admin/v1/audit?limit=1").json()
    second = admin(r, "GET", f"/admin/v1/audit?limit=1&cursor={first['next']}").json()
    assert first["data"][0]["id"] != second["data"][0]["id"]


def test_a_viewer_token_reads_but_never_writes(stack):
    a, b, r = stack
    for path in ("/admin/v1/channels", "/admin/v1/stats/summary", "/admin/v1/usage", "/admin/v1/config",
                 "/admin/v1/groups", "/admin/v1/audit", "/admin/v1/strategy"):
        assert admin(r, "GET", path, token=VIEWER).status == 200, path
    explained = admin(r, "POST", "/admin/v1/explain", {"model": "m1"}, token=VIEWER)
    assert explained.status == 200, explained
    writes = [("POST", "/admin/v1/channels", {"id": "x", "base_url": b.base_url}),
              ("PATCH", "/admin/v1/channels/a", {"enabled": False}),
              ("DELETE", "/admin/v1/channels/a", None),
              ("PUT", "/admin/v1/strategy", {"strategy": "speed_optimized"}),
              ("POST", "/admin/v1/groups", {"name": "g", "query": "m1"}),
              ("PATCH", "/admin/v1/routing", {"max_retry_attempts": 1})]
    for method, path, body in writes:
        resp = admin(r, method, path, body, token=VIEWER)
        assert resp.status == 403 and resp.json()["error"]["code"] == "permission_denied", (method, path, resp)
    assert admin(r, "GET", "/admin/v1/channels", token="wrong").status == 401
    assert admin(r, "GET", "/admin/v1/audit").json()["data"] == [], "nothing was changed"


def test_the_routing_switch_holds_its_delay_and_cooldown(tmp_path):
    """Smart routing off sends everything to the default; the change waits its
    delay, a second one within the cooldown is refused, and each is in the
    switch's history with who made it."""
    a = Fake("A", ["m1", "m2"])
    b = Fake("B", ["m2"])
    cfg = ("routing:\n  switch: {default: {channel: a, model: m1}, delay_seconds: 1, cooldown_seconds: 3}\n"
           "channels:\n" + channel_yaml("a", a, models=["m1", "m2"], priority=20)
           + channel_yaml("b", b, models=["m2"], priority=1))
    r = Router(tmp_path, cfg)
    try:
        assert r.chat("m2").headers["x-router-channel"] == "b"
        asked = time.time()
        off = admin(r, "PUT", "/admin/v1/switch", {"smart": False})
        assert off.status == 202, off
        assert admin(r, "GET", "/admin/v1/switch").json()["pending"]["smart"] is False
        # Within the delay smart routing still holds.
        assert r.chat("m2").headers["x-router-channel"] == "b"
        assert admin(r, "PUT", "/admin/v1/switch", {"smart": True}).status == 409
        wait_for(lambda: r.chat("m2").headers.get("x-router-model") == "m1", timeout=3, interval=0.05,
                 what="the switch takes effect")
        assert time.time() - asked >= 0.9, "not before its delay"
        resp = r.chat("anything-at-all")
        assert resp.status == 200 and resp.headers["x-router-channel"] == "a", resp
        early = admin(r, "PUT", "/admin/v1/switch", {"smart": True})
        assert early.status == 429 and early.json()["error"]["code"] == "switch_cooldown", early
        assert int(early.headers["retry-after"]) >= 1
        assert admin(r, "PUT", "/admin/v1/switch", {"smart": False}, token=None).status == 200, "no change: no-op"
        state = admin(r, "GET", "/admin/v1/switch").json()
        assert state["smart"] is False and state["history"][0]["actor"] == "admin"
        assert state["history"][0]["from"] == "smart" and state["history"][0]["to"] == "default"
    finally:
        r.stop()
        a.stop()
        b.stop()
