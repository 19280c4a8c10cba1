"""Defects found in review, each through a real Envoy with both filters: client
credentials on the attempt side, provider error bodies that quote a key, stats
labels, and the accepted forms of a client token."""
import json
import threading
import time

import pytest

from harness import Fake, Router, channel_yaml, wait_for

KEY_A = "sk-defect-aaaa-5555"
KEY_B = "sk-defect-bbbb-6666"
CLIENT_TOKEN = "sar-client-token-7777"


@pytest.fixture
def stack():
    made = []

    def track(x):
        made.append(x)
        return x

    yield track
    for x in reversed(made):
        x.stop()


def test_a_channel_removed_while_its_attempt_waits_is_never_sent_the_clients_token(tmp_path, stack):
    """The plan names a channel; a reload removes it before Envoy's second
    attempt; the attempt must not go out unchanged with the client's token."""
    a = stack(Fake("A", ["m"], keys=[KEY_A]))
    b = stack(Fake("B", ["m"], keys=[KEY_B]))
    auth = f"auth:\n  enabled: true\n  api_tokens: [{CLIENT_TOKEN}]\n"
    both = auth + "channels:\n" + channel_yaml("a", a, priority=1, key=KEY_A) + channel_yaml("b", b, priority=2, key=KEY_B)
    r = stack(Router(tmp_path, both, control_plane_extra="  health_check_interval: 3600\n"))
    headers = {"authorization": f"Bearer {CLIENT_TOKEN}"}
    assert r.chat("m", headers=headers).status == 200
    # A answers 503 only after a second: time enough to remove B from the table.
    a.behave(status=503, first_byte_delay=1.5)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("resp", r.chat("m", headers=headers)))
    t.start()
    time.sleep(0.3)
    version = r.get("/health").json()["table_version"]
    r.write_config(auth + "channels:\n" + channel_yaml("a", a, priority=1, key=KEY_A))
    wait_for(lambda: r.get("/health").json()["table_version"] != version, timeout=5, what="table without b")
    t.join(timeout=10)
    resp = out["resp"]
    # B's channel is gone: its attempt is refused with a clear error...
    assert resp.status == 503, resp
    err = resp.json()["error"]
    assert err["code"] == "channel_unavailable", err
    assert "b" in err["message"]
    # ...and nothing reached B, least of all the client's token.
    for seen in b.requests():
        assert CLIENT_TOKEN not in json.dumps(seen["headers"]), seen
    assert b.requests() == []
    wait_for(lambda: "sar_channel_attempt_errors" in r.prometheus(), timeout=5, what="attempt error stat")


def test_provider_error_bodies_never_quote_the_channels_key(tmp_path, stack):
    a = stack(Fake("A", ["m"], keys=[KEY_A]))
    r = stack(Router(tmp_path, "channels:\n" + channel_yaml("a", a, priority=1, key=KEY_A)))
    for status in (400, 404, 422):
        body = json.dumps({"error": {"message": f"bad request for key {KEY_A} (key {KEY_A})", "type": "x"}})
        a.behave(status=status, error_body=body)
        resp = r.chat("m")
        assert resp.status == status, resp
        assert KEY_A not in resp.body.decode(), resp
        # The body stays the provider's, with the key masked in place.
        err = resp.json()["error"]
        assert err["message"].startswith("bad request for key sk-"), err
        assert "*" in err["message"]
        stream = r.chat("m", stream=True)
        assert stream.status == status and KEY_A not in stream.body.decode()


STRANGE_MODELS = ["vendor/model:free", "a.b.c", "x=y", "qwen3-\u4e2d\u6587", "spaces and\ttabs"]


def test_stats_labels_are_cleaned_the_same_way_by_both_filters(tmp_path, stack):
    a = stack(Fake("A", STRANGE_MODELS))
    r = stack(Router(tmp_path, "channels:\n" + channel_yaml("a", a, priority=1, models=STRANGE_MODELS)))
    for m in STRANGE_MODELS:
        assert r.chat(m).status == 200, m
    expected = ["vendor_model_free", "a_b_c", "x_y", "qwen3-__", "spaces_and_tabs"]

    def all_counted():
        p = r.prometheus()
        return p if all(f'sar_model_requests{{model="{label}"}} 1' in p for label in expected) else None

    prom = wait_for(all_counted, timeout=5, what="cleaned model labels")
    assert 'sar_channel_attempts{channel="a"} 5' in prom


def test_every_documented_form_of_the_client_token_is_accepted(tmp_path, stack):
    a = stack(Fake("A", ["m"], keys=[KEY_A]))
    r = stack(Router(tmp_path, f"auth:\n  enabled: true\n  api_tokens: [{CLIENT_TOKEN}]\nchannels:\n"
                     + channel_yaml("a", a, priority=1, key=KEY_A)))
    for headers in ({"authorization": f"Bearer {CLIENT_TOKEN}"}, {"authorization": f"bearer {CLIENT_TOKEN}"},
                    {"authorization": f"BEARER  {CLIENT_TOKEN}"}, {"authorization": CLIENT_TOKEN},
                    {"x-api-key": CLIENT_TOKEN}):
        resp = r.chat("m", headers=headers)
        assert resp.status == 200, (headers, resp)
    for headers in ({}, {"authorization": "Bearer nope"}, {"x-api-key": "nope"}, {"authorization": "Basic " + CLIENT_TOKEN}):
        resp = r.chat("m", headers=headers)
        assert resp.status == 401, (headers, resp)
        assert resp.json()["error"]["code"] == "invalid_api_key"
    # The provider saw only its own key, never the client's token or header.
    for seen in a.requests():
        assert seen["headers"]["authorization"] == f"Bearer {KEY_A}"
        assert "x-api-key" not in seen["headers"]


def test_a_generated_client_token_is_written_and_works(tmp_path, stack):
    a = stack(Fake("A", ["m"]))
    r = stack(Router(tmp_path, "auth:\n  enabled: true\nchannels:\n" + channel_yaml("a", a, priority=1, models=["m"])))
    token_file = tmp_path / "data" / "api.token"
    token = token_file.read_text().strip()
    assert token.startswith("sar-") and len(token) == 36
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token in (tmp_path / "control-plane.log").read_text(), "printed at first start"
    assert r.chat("m").status == 401
    assert r.chat("m", headers={"authorization": f"Bearer {token}"}).status == 200
