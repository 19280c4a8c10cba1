"""Configuration changes reach a running Envoy without a restart, and bad
changes or a stopped control plane never take routing away."""
import time

import pytest

from harness import Fake, Router, channel_yaml, wait_for

KEY_A = "sk-reload-a-0001"
KEY_A2 = "sk-reload-a-0002"


def model_of(resp):
    """The model a routed answer came from; any answer but a 200 fails the test."""
    assert resp.status == 200, resp
    return resp.headers["x-router-model"]


def served_or_unknown(resp):
    """True once a model is served; a 404 (not in the table yet) is "not yet",
    anything else fails the test."""
    assert resp.status in (200, 404), resp
    if resp.status == 404:
        assert resp.json()["error"]["code"] == "model_not_found", resp
    return resp.status == 200


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
    """Time until `predicate()` holds, failing after `seconds`. The predicates
    below check the status first: a reload may not produce a single error."""
    start = time.time()
    wait_for(predicate, timeout=seconds, interval=0.05, what="routing change")
    return time.time() - start


def test_alias_key_and_model_list_edits_apply_within_2s(setup):
    a, r, config = setup
    assert r.chat("std-model").headers["x-router-model"] == "ep-old"

    r.write_config(config(alias="ep-new"))
    routed_within(r, 2.0, lambda: model_of(r.chat("std-model")) == "ep-new")

    a.reset()
    r.write_config(config(alias="ep-new", key=KEY_A2))

    def new_key_used():
        a.reset()
        assert r.chat("m1").status == 200
        return a.requests()[-1]["headers"]["authorization"] == f"Bearer {KEY_A2}"

    routed_within(r, 2.0, new_key_used)

    assert r.chat("m2").status == 404
    r.write_config(config(alias="ep-new", key=KEY_A2, models=("m1", "m2")))
    routed_within(r, 2.0, lambda: served_or_unknown(r.chat("m2")))
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
    routed_within(r, 2.0, lambda: served_or_unknown(r.chat("m3")))


def test_envoy_keeps_routing_when_the_control_plane_stops(setup):
    a, r, config = setup
    version = r.get("/health").json()["table_version"]
    r.stop_control_plane()
    # Longer than a table fetch may take (5 s): every poll has failed by then.
    deadline = time.time() + 6.5
    while time.time() < deadline:
        resp = r.chat("std-model")
        assert resp.status == 200, resp
        assert model_of(resp) == "ep-old", "still the last table"
        assert r.get("/health").json()["table_version"] == version
        time.sleep(0.25)
    # And picks up tables again once the control plane is back.
    r.write_config(config(models=("m1", "m4")))
    r.start_control_plane()
    routed_within(r, 3.0, lambda: served_or_unknown(r.chat("m4")))


def test_table_endpoint_needs_the_token(setup):
    a, r, config = setup
    from harness import assert_error, request
    assert_error(request(r.cp_port, "GET", "/v1/table"), 401, "invalid_table_token")
    assert_error(request(r.cp_port, "GET", "/v1/table", headers={"authorization": "Bearer wrong"}), 401,
                 "invalid_table_token")
    token = (r.dir / "data" / "table.token").read_text().strip()
    ok = request(r.cp_port, "GET", "/v1/table", headers={"authorization": f"Bearer {token}"})
    assert ok.status == 200 and ok.json()["schema"] == 1
    same = request(r.cp_port, "GET", "/v1/table",
                   headers={"authorization": f"Bearer {token}", "if-none-match": ok.headers["etag"]})
    assert same.status == 304


def test_traffic_through_reloads_sees_only_the_old_or_the_new_table(setup):
    """Clients keep sending while the config changes back and forth: every answer
    is a 200 from one table or the other, never an error in between."""
    import threading
    a, r, config = setup
    stop = threading.Event()
    seen, errors = [], []

    def client():
        while not stop.is_set():
            try:
                resp = r.chat("std-model")
                if resp.status != 200:
                    errors.append(resp)
                else:
                    seen.append(resp.headers["x-router-model"])
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for alias in ("ep-new", "ep-old", "ep-new", "ep-old", "ep-new"):
            r.write_config(config(alias=alias))
            time.sleep(0.6)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert errors == [], errors[:3]
    assert len(seen) > 40, len(seen)
    assert set(seen) == {"ep-old", "ep-new"}, set(seen)


def envoy_identity(r):
    """Envoy's process and hot-restart epoch: unchanged means not restarted."""
    assert r.envoy.poll() is None, "Envoy exited"
    epoch = [line for line in r.stats().splitlines() if line.startswith("server.hot_restart_epoch:")]
    assert epoch, "Envoy reports server.hot_restart_epoch"
    return r.envoy.pid, epoch[0]


def test_a_channel_added_moved_and_removed_in_the_file_needs_no_envoy_restart(setup, tmp_path):
    """Channels are Envoy clusters served by the control plane: a new channel
    serves within 2 s, one moved to another host follows it, a removed one is
    never chosen again, Envoy keeps its process and restart epoch, and traffic
    meanwhile sees no error."""
    import threading
    a, r, config = setup
    b = Fake("B", ["only-b"])
    b2 = Fake("B2", ["only-b"])
    try:
        before = envoy_identity(r)
        stop = threading.Event()
        errors = []

        def client():
            while not stop.is_set():
                resp = r.chat("std-model")
                if resp.status != 200:
                    errors.append(resp)

        t = threading.Thread(target=client)
        t.start()
        try:
            r.write_config(config() + channel_yaml("b", b, models=["only-b"], priority=20))
            took = routed_within(r, 2.0, lambda: served_or_unknown(r.chat("only-b")))
            assert r.chat("only-b").headers["x-router-channel"] == "b"
            assert len(b.requests()) >= 1
            # Moved to another host under the same id: its cluster follows.
            r.write_config(config() + channel_yaml("b", b2, models=["only-b"], priority=20))
            wait_for(lambda: r.chat("only-b").status == 200 and len(b2.requests()) > 0, timeout=3,
                     interval=0.05, what="requests reach the moved channel")
            # Removed: never chosen again (its model is gone with it).
            r.write_config(config())
            wait_for(lambda: r.chat("only-b").status == 404, timeout=2, what="removed channel leaves the table")
            served_b2 = len(b2.requests())
            for _ in range(10):
                assert r.chat("only-b").status == 404
            assert len(b2.requests()) == served_b2
        finally:
            stop.set()
            t.join(timeout=10)
        assert errors == [], errors[:3]
        assert took < 2.0, took
        assert envoy_identity(r) == before
        stats = r.stats()
        assert "cluster.channel_b.upstream_rq_total" in stats, "the channel has its own cluster stats"
    finally:
        b.stop()
        b2.stop()
