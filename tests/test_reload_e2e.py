"""Configuration changes reach a running Envoy without a restart, and bad
changes or a stopped control plane never take routing away."""
import time

import pytest

from harness import Fake, Router, channel_yaml, wait_for

KEY_A = "sk-reload-a-0001"
KEY_A2 = "sk-reload-a-0002"


@pytest.fixture
def setup(tmp_path):
    a = Fake("A", ["ep-old", "ep-new", "m1"], keys=[KEY_A, KEY_A2])
    items = {"a": a}

    def config(alias="ep-old", key=KEY_A, models=("m1",)):
        return "channels:\n" + channel_yaml(
            "a", a, key=key, models=list(models), extra=f"    model_aliases: {{std-model: {alias}}}\n")

    r = Router(tmp_path, config())
    items["router"] = r
    yield a, r, config
    r.stop()
    a.stop()


def routed_within(r, seconds, predicate):
    """Time until `predicate(response)` holds, failing after `seconds`."""
    start = time.time()
    wait_for(predicate, timeout=seconds, interval=0.05, what="routing change")
    return time.time() - start


def test_alias_key_and_model_list_edits_apply_within_2s(setup):
    a, r, config = setup
    assert r.chat("std-model").headers["x-router-model"] == "ep-old"

    r.write_config(config(alias="ep-new"))
    routed_within(r, 2.0, lambda: r.chat("std-model").headers.get("x-router-model") == "ep-new")

    a.reset()
    r.write_config(config(alias="ep-new", key=KEY_A2))

    def new_key_used():
        a.reset()
        return r.chat("m1").status == 200 and a.requests()[-1]["headers"]["authorization"] == f"Bearer {KEY_A2}"

    routed_within(r, 2.0, new_key_used)

    assert r.chat("m2").status == 404
    r.write_config(config(alias="ep-new", key=KEY_A2, models=("m1", "m2")))
    routed_within(r, 2.0, lambda: r.chat("m2").status == 200)
    assert "m2" in [m["id"] for m in r.get("/v1/models").json()["data"]]


def test_broken_yaml_keeps_the_last_good_table(setup):
    a, r, config = setup
    version = r.get("/health").json()["table_version"]
    r.write_config("channels:\n  - id: a\n    base_url: [this is not a url\n")
    time.sleep(1.0)
    assert r.chat("std-model").status == 200
    assert r.get("/health").json()["table_version"] == version
    r.write_config("channels:\n  - id: a\n    base_ur: http://x\n")
    time.sleep(1.0)
    assert r.chat("m1").status == 200
    log = (r.dir / "control-plane.log").read_text()
    assert "config rejected, keeping table" in log
    assert "channels[0].base_ur: unknown field" in log
    # A good edit after the bad ones applies again.
    r.write_config(config(models=("m1", "m3")))
    routed_within(r, 2.0, lambda: r.chat("m3").status == 200)


def test_envoy_keeps_routing_when_the_control_plane_stops(setup):
    a, r, config = setup
    r.stop_control_plane()
    time.sleep(0.5)
    for _ in range(5):
        assert r.chat("std-model").status == 200
    assert r.get("/health").status == 200
    # And picks up tables again once the control plane is back.
    r.write_config(config(models=("m1", "m4")))
    r.start_control_plane()
    routed_within(r, 3.0, lambda: r.chat("m4").status == 200)


def test_table_endpoint_needs_the_token(setup):
    a, r, config = setup
    from harness import request
    assert request(r.cp_port, "GET", "/v1/table").status == 401
    assert request(r.cp_port, "GET", "/v1/table", headers={"authorization": "Bearer wrong"}).status == 401
    token = (r.dir / "data" / "table.token").read_text().strip()
    ok = request(r.cp_port, "GET", "/v1/table", headers={"authorization": f"Bearer {token}"})
    assert ok.status == 200 and ok.json()["schema"] == 1
    same = request(r.cp_port, "GET", "/v1/table",
                   headers={"authorization": f"Bearer {token}", "if-none-match": ok.headers["etag"]})
    assert same.status == 304
