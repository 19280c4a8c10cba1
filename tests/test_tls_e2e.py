"""HTTPS channels: Envoy and the control plane both verify the provider's
certificate against `server.ca_file` and the channel's host name, so a server
that presents any other certificate never receives a request, let alone a key."""
import pytest

from certs import CertAuthority
from harness import Fake, Router, request, wait_for  # noqa: F401

KEY_GOOD = "sk-good-tls-0000"
KEY_BAD = "sk-must-not-leak-9999"


@pytest.fixture
def ca(tmp_path):
    return CertAuthority(tmp_path)


@pytest.fixture
def stack(tmp_path):
    made = []

    def track(x):
        made.append(x)
        return x

    yield track
    for x in reversed(made):
        x.stop()


def all_requests(fake):
    return fake.control("requests", method="GET")


def tls_config(channels):
    return "channels:\n" + "".join(channels)


def tls_router(tmp_path, ca, channels):
    return Router(tmp_path, tls_config(channels), server_extra=f"  ca_file: {ca.ca_file}\n")


def channel(cid, fake, key, priority, models=None):
    text = f"  - id: {cid}\n    base_url: {fake.base_url}\n    api_key: {key}\n    priority: {priority}\n"
    if models:
        text += f"    configured_models: {models}\n"
    return text


def test_the_right_certificate_is_trusted_by_envoy_and_the_control_plane(tmp_path, ca, stack):
    good = stack(Fake("GOOD", ["tls-model-discovered"], keys=[KEY_GOOD], tls=ca.server("good", ["localhost"])))
    r = stack(tls_router(tmp_path, ca, [channel("good", good, KEY_GOOD, 1, ["tls-model-configured"])]))
    # The control plane's discovery reached it with the same CA file Envoy uses.
    ids = [m["id"] for m in r.get("/v1/models").json()["data"]]
    assert "tls-model-discovered" in ids, ids
    resp = r.chat("tls-model-discovered")
    assert resp.status == 200, resp
    assert resp.json()["provider"] == "GOOD"
    [seen] = good.requests()
    assert seen["headers"]["authorization"] == f"Bearer {KEY_GOOD}"
    assert seen["headers"]["host"] == f"localhost:{good.port}"


BAD_CERTS = {
    "wrong-name": dict(dns_names=["wrong.example"]),
    "self-signed": dict(dns_names=["localhost"], self_signed=True),
    "expired": dict(dns_names=["localhost"], expired=True),
}


@pytest.mark.parametrize("kind", sorted(BAD_CERTS))
def test_a_bad_certificate_is_refused_and_fails_over_without_the_key(tmp_path, ca, stack, kind):
    good = stack(Fake("GOOD", ["m"], keys=[KEY_GOOD], tls=ca.server("good", ["localhost"])))
    # The bad server starts with a valid certificate (the control plane checks it
    # and Envoy routes to it first), then the address is taken over by a server
    # presenting a bad one, as an attacker on the path would.
    bad = stack(Fake("BAD", ["m"], keys=[KEY_BAD], tls=ca.server("bad-ok", ["localhost"])))
    r = stack(tls_router(tmp_path, ca, [channel("bad", bad, KEY_BAD, 1, ["m"]), channel("good", good, KEY_GOOD, 2, ["m"])]))
    assert r.chat("m").headers.get("x-router-channel") == "bad"
    port = bad.port
    bad.stop()
    impostor = stack(Fake("IMPOSTOR", ["m"], keys=[KEY_BAD], port=port,
                          tls=ca.server(f"impostor-{kind}", **BAD_CERTS[kind])))

    resp = r.chat("m")
    assert resp.status == 200, resp
    assert resp.json()["provider"] == "GOOD"
    assert resp.headers["x-router-channel"] == "good"
    assert resp.headers["x-router-attempts"] == "2"
    # Envoy refused the handshake: the impostor never saw a request.
    assert all_requests(impostor) == []


@pytest.mark.parametrize("kind", sorted(BAD_CERTS))
def test_the_control_plane_refuses_a_bad_certificate_too(tmp_path, ca, stack, kind):
    bad = stack(Fake("BAD", ["m-discovered"], keys=[KEY_BAD], tls=ca.server(f"bad-{kind}", **BAD_CERTS[kind])))
    r = stack(tls_router(tmp_path, ca, [channel("bad", bad, KEY_BAD, 1, ["m-configured"])]))
    admin = (r.dir / "data" / "admin.token").read_text().strip()

    def state():
        resp = request(r.cp_port, "GET", "/admin/v1/channels", headers={"authorization": f"Bearer {admin}"})
        assert resp.status == 200, resp
        [ch] = resp.json()["channels"]
        return ch if ch["last_error"] else None

    ch = wait_for(state, timeout=10, what="the control plane's check of the bad channel")
    assert ch["state"] == "unreachable", ch
    assert "certificate" in ch["last_error"].lower() or "tls" in ch["last_error"].lower(), ch
    ids = [m["id"] for m in r.get("/v1/models").json()["data"]]
    assert "m-discovered" not in ids and "m-configured" in ids
    # Neither discovery nor a key check got through with the key.
    assert all_requests(bad) == []
    # And Envoy, with no other channel, answers the all-failed error without
    # reaching the bad server either.
    resp = r.chat("m-configured")
    assert resp.status == 503, resp
    assert resp.json()["error"]["code"] == "all_channels_failed"
    assert all_requests(bad) == []
