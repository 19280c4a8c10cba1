"""The model query language through a real Envoy."""
import json

import pytest

from harness import assert_error, Fake, Router, channel_yaml, request


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    fakes = {
        "openrouter": Fake("OR", ["qwen/qwen3-235b-a22b:free", "qwen/qwen3-235b-a22b", "qwen/qwen3-30b-a3b:free",
                                  "anthropic/claude-3-haiku", "moonshotai/kimi-k2:free"], keys=["k-or"]),
        "siliconflow": Fake("SF", ["Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-8B", "BAAI/bge-m3"], keys=["k-sf"]),
        "local": Fake("LOCAL", ["qwen/qwen3-8b:free"]),
        "anthropic": Fake("ANT", ["claude-3-haiku-20240307", "text-embedding-3-small"], keys=["k-ant"]),
    }
    cfg = ("channels:\n"
           + channel_yaml("openrouter", fakes["openrouter"], priority=2, key="k-or")
           + channel_yaml("siliconflow", fakes["siliconflow"], priority=3, key="k-sf")
           + channel_yaml("local", fakes["local"], priority=1, extra="    tags: [local]\n")
           + channel_yaml("anthropic", fakes["anthropic"], priority=4, key="k-ant")
           + "model_groups:\n  my-big-qwen:\n    description: large qwen3 anywhere but local\n"
             "    query: tag:qwen3,!local\n    filters:\n      min_parameter_count: 100\n")
    r = Router(tmp, cfg)
    yield r, fakes
    r.stop()
    for f in fakes.values():
        f.stop()


@pytest.fixture(autouse=True)
def clean(world):
    for f in world[1].values():
        f.reset()


def test_tag_query_reaches_a_free_non_local_qwen3(world):
    r, fakes = world
    resp = r.chat("tag:free,qwen3,!local")
    assert resp.status == 200, resp
    assert resp.headers["x-router-channel"] == "openrouter"
    [seen] = fakes["openrouter"].requests()
    assert seen["model"] in ("qwen/qwen3-235b-a22b:free", "qwen/qwen3-30b-a3b:free")
    assert fakes["local"].requests() == []
    # Without the negation the local free qwen3 is a candidate too; cost_first
    # (all free) then prefers the largest model.
    resp = r.chat("tags: FREE, Qwen3")
    assert resp.headers["x-router-model"] == "qwen/qwen3-235b-a22b:free"


def test_core_name_reaches_every_channel_serving_a_variant(world):
    r, fakes = world
    fakes["openrouter"].behave(status=503)
    resp = r.chat("qwen3-235b-a22b")
    assert resp.status == 200, resp
    assert resp.headers["x-router-channel"] == "siliconflow"
    assert resp.headers["x-router-attempts"] == "3"
    assert sorted(x["model"] for x in fakes["openrouter"].requests()) == ["qwen/qwen3-235b-a22b",
                                                                       "qwen/qwen3-235b-a22b:free"]
    assert [x["model"] for x in fakes["siliconflow"].requests()] == ["Qwen/Qwen3-235B-A22B"]


def test_date_suffix_and_name_as_tags(world):
    r, fakes = world
    resp = r.chat("claude-3-haiku")
    assert resp.status == 200
    # Exact `anthropic/claude-3-haiku` is not exact for `claude-3-haiku`; both are
    # core-name variants, in channel preference order.
    assert resp.headers["x-router-channel"] == "openrouter"
    fakes["openrouter"].behave(status=500)
    resp = r.chat("claude-3-haiku")
    assert resp.headers["x-router-channel"] == "anthropic"
    assert fakes["anthropic"].requests()[-1]["model"] == "claude-3-haiku-20240307"
    fakes["openrouter"].behave()
    resp = r.chat("kimi-free")
    assert resp.status == 200 and resp.headers["x-router-model"] == "moonshotai/kimi-k2:free"


def test_unknown_tag_is_404_naming_it(world):
    r, _ = world
    err = assert_error(r.chat("tag:qwen3,nosuchtag"), 404, "model_not_found")
    assert '"nosuchtag"' in err["message"]
    # A query of only negative tags matches everything but them: refused.
    err = assert_error(r.chat("tag:!free"), 400, "invalid_model_query")
    assert "positive tag" in err["message"], err
    err = assert_error(r.chat("auto:nonsense"), 404, "model_not_found")
    assert "auto:free" in err["message"]
    # Non-chat models are not reachable by tags.
    err = assert_error(r.chat("tag:bge"), 404, "model_not_found")
    assert "not chat models" in err["message"]


def test_groups_route_and_are_listed(world):
    r, fakes = world
    listing = r.get("/v1/models").json()
    ids = [m["id"] for m in listing["data"]]
    for g in ("auto:free", "auto:fast", "auto:smart", "auto:chinese", "my-big-qwen"):
        assert g in ids
    group = next(m for m in listing["data"] if m["id"] == "my-big-qwen")
    assert group["group"]["members"] == 3
    assert "qwen3" in listing["tags"] and "free" in listing["tags"]
    resp = r.chat("auto:free")
    assert resp.status == 200 and resp.headers["x-router-model"].endswith(":free")
    resp = r.chat("my-big-qwen")
    assert resp.status == 200 and "235" in resp.headers["x-router-model"]


def test_admin_explain(world):
    r, _ = world
    token = (r.dir / "data" / "admin.token").read_text().strip()
    assert_error(request(r.cp_port, "POST", "/admin/v1/explain", {"model": "x"}), 401, "invalid_admin_token")
    resp = request(r.cp_port, "POST", "/admin/v1/explain", {"model": "tag:qwen3,!local"},
                   headers={"authorization": f"Bearer {token}"})
    assert resp.status == 200, resp
    v = resp.json()
    assert v["query"] == {"kind": "tags", "include": ["qwen3"], "exclude": ["local"]}
    assert [c["channel"] for c in v["candidates"]][:2] == ["openrouter", "openrouter"]
    assert all("tags" in c and "context_length" in c for c in v["candidates"])
    assert any(x["channel"] == "local" and "local" in x["reason"] for x in v["excluded"])
    assert not any("k-or" in json.dumps(x) for x in (v,))


def test_explain_cli(world):
    import subprocess
    from harness import SAR_BIN
    r, _ = world
    out = subprocess.run([SAR_BIN, "explain", "--config", str(r.config_path), "tag:free,qwen3,!local"],
                         check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    assert v["resolved_by"] == ["tags"]
    assert {c["channel"] for c in v["candidates"]} == {"openrouter"}
    assert {c["model"] for c in v["candidates"]} == {"qwen/qwen3-235b-a22b:free", "qwen/qwen3-30b-a3b:free"}
    # A bad query is explained, not crashed on.
    v = json.loads(subprocess.run([SAR_BIN, "explain", "--config", str(r.config_path), "--offline", "tag:"],
                                  check=True, capture_output=True, text=True).stdout)
    assert v["error"]["status"] == 400
