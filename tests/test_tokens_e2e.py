"""Client tokens with rules, through a real Envoy, with the official OpenAI SDK
as the client: a token allowed only `free` models never reaches a paid channel,
whatever its request names; a token limited to some models gets 403 for the
others; tokens may be given by their SHA-256; every record names its token."""
import hashlib
import subprocess

import openai
import pytest

from harness import SAR_BIN, Fake, Router, channel_yaml, request, wait_for

FREE_TOKEN, MODELS_TOKEN, HASHED_TOKEN, PLAIN_TOKEN = "sar-free-only", "sar-models", "sar-hashed", "sar-plain"


@pytest.fixture
def stack(tmp_path):
    free = Fake("FREE", ["m", "small"])
    paid = Fake("PAID", ["m", "big"])
    sha = hashlib.sha256(HASHED_TOKEN.encode()).hexdigest()
    cfg = ("auth:\n  enabled: true\n  api_tokens:\n"
           f"    - {PLAIN_TOKEN}\n"
           f"    - {{id: free-only, token: {FREE_TOKEN}, allow: {{tags: [free]}}}}\n"
           f"    - {{id: two-models, token: {MODELS_TOKEN}, allow: {{models: [m, small]}}}}\n"
           f"    - {{id: hashed, sha256: {sha}, allow: {{channels: [paid]}}}}\n"
           "model_groups:\n  everything:\n    channels:\n"
           "      - {channel: paid, model: big, priority: 1}\n      - {channel: free, model: small, priority: 2}\n"
           "channels:\n"
           + channel_yaml("free", free, models=["m", "small"], priority=1, extra="    tags: [free]\n")
           + channel_yaml("paid", paid, models=["m", "big"], priority=2))
    r = Router(tmp_path, cfg)
    yield free, paid, r
    r.stop()
    free.stop()
    paid.stop()


def client(r, token):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{r.api_port}/v1", api_key=token, max_retries=0, timeout=20)


def ask(c, model, **kw):
    return c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}], **kw)


def test_a_free_only_token_never_reaches_a_paid_channel(stack):
    free, paid, r = stack
    c = client(r, FREE_TOKEN)
    seen_paid = len(paid.requests())
    for model in ("m", "small", "tag:free", "everything", "m,big", "auto:free"):
        try:
            resp = ask(c, model)
            assert resp.headers["x-router-channel"] == "free", model
        except openai.APIStatusError as e:
            # A name only the paid channel serves is refused, never sent there.
            assert e.status_code in (403, 404), (model, e.status_code)
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(c, "big")
    assert e.value.body["code"] == "model_not_allowed" and "free-only" in e.value.message
    # With the free channel failing, the request fails: it does not fail over to paid.
    free.behave(status=503)
    with pytest.raises(openai.APIStatusError) as e:
        ask(c, "m")
    assert e.value.status_code == 503
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            ask(c, "m", stream=True)
    assert len(paid.requests()) == seen_paid
    # Another token is not bound by those rules.
    assert ask(client(r, PLAIN_TOKEN), "m").headers["x-router-channel"] == "paid"


def test_model_rules_hashed_tokens_and_records(stack):
    free, paid, r = stack
    assert ask(client(r, MODELS_TOKEN), "small").headers["x-router-channel"] == "free"
    with pytest.raises(openai.PermissionDeniedError):
        ask(client(r, MODELS_TOKEN), "big")
    # Given only by its hash, limited to the paid channel.
    assert ask(client(r, HASHED_TOKEN), "m").headers["x-router-channel"] == "paid"
    stream = client(r, HASHED_TOKEN).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    with pytest.raises(openai.AuthenticationError):
        ask(client(r, "sar-wrong"), "m")
    ask(client(r, PLAIN_TOKEN), "m")

    admin = {"authorization": f"Bearer {(r.dir / 'data' / 'admin.token').read_text().strip()}"}

    def records():
        return request(r.cp_port, "GET", "/admin/v1/usage?limit=100", headers=admin).json()["data"]

    wait_for(lambda: len(records()) == 6, timeout=15, what="six records")
    by = {}
    for x in records():
        by.setdefault(x["client"], []).append(x)
    fingerprint = "token-" + hashlib.sha256(PLAIN_TOKEN.encode()).hexdigest()[:8]
    assert sorted(by, key=str) == sorted(["two-models", "hashed", fingerprint, None], key=str)
    assert [x["status"] for x in by["two-models"]] == [200, 403]
    assert len(by["hashed"]) == 2 and by[None][0]["status"] == 401
    # The table Envoy fetches holds hashes, never a client's token.
    table_token = (r.dir / "data" / "table.token").read_text().strip()
    table = request(r.cp_port, "GET", "/v1/table", headers={"authorization": f"Bearer {table_token}"}).body.decode()
    assert all(t not in table for t in (FREE_TOKEN, MODELS_TOKEN, HASHED_TOKEN, PLAIN_TOKEN))


def test_bad_token_entries_are_refused_with_their_reason(tmp_path):
    cfg = tmp_path / "bad.yaml"
    for entry, reason in (
        ("{id: x}", "one of them"),
        ("{id: x, token: a, sha256: " + "0" * 64 + "}", "one of them"),
        ("{id: x, sha256: abc}", "64 hex"),
        ("{id: 'a b', token: t}", "an id is"),
        ("{id: x, token: t, allow: {channels: [nope]}}", "no channel \"nope\""),
        ("{id: x, token: t, allow: {tagz: [free]}}", "tagz"),
    ):
        cfg.write_text("auth:\n  enabled: true\n  api_tokens:\n    - " + entry + "\n"
                       "channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n    discover: false\n"
                       "    configured_models: [m]\n")
        out = subprocess.run([SAR_BIN, "check", "--config", str(cfg)], capture_output=True, text=True)
        assert out.returncode != 0, entry
        assert reason in out.stderr, (entry, out.stderr)
        assert "panicked" not in out.stderr
