"""Control plane behaviour seen through a real Envoy: discovery fallback and
the on-disk discovery cache."""
import json
import subprocess

from harness import SAR_BIN, Fake, Router, free_port, request, wait_for


def table(r):
    token = (r.dir / "data" / "table.token").read_text().strip()
    resp = request(r.cp_port, "GET", "/v1/table", headers={"authorization": f"Bearer {token}"})
    assert resp.status == 200
    return resp.json()


def test_discovery_failure_falls_back_to_configured_models(tmp_path):
    dead = free_port()
    r = Router(tmp_path, "channels:\n"
               f"  - id: down\n    base_url: http://127.0.0.1:{dead}/v1\n    configured_models: [m-configured]\n")
    try:
        ids = [m["id"] for m in r.get("/v1/models").json()["data"]]
        assert "m-configured" in ids
        [ch] = table(r)["channels"]
        # Its health check got no answer: a last resort, still listed.
        assert ch["healthy"] is False
        assert "discovery failed" in (r.dir / "control-plane.log").read_text()
    finally:
        r.stop()


def test_restart_reloads_the_disk_cache_without_calling_models_first(tmp_path):
    a = Fake("A", ["m-live-1", "m-live-2"])
    r = Router(tmp_path, "channels:\n" f"  - id: a\n    base_url: {a.base_url}\n")
    try:
        before = table(r)
        assert {m["id"] for m in before["channels"][0]["models"]} == {"m-live-1", "m-live-2"}
        assert (r.dir / "data" / "cache" / "channels" / "a.json").exists()
        r.stop_control_plane()
        a.reset()
        r.start_control_plane()
        after = table(r)
        assert after["channels"][0]["models"] == before["channels"][0]["models"]
        assert a.requests("/models") == [], "restart used the cache, not /models"
        assert "models from the disk cache" in (r.dir / "control-plane.log").read_text()
        assert r.chat("m-live-2").status == 200
    finally:
        r.stop()
        a.stop()


def test_logs_follow_rust_log_and_can_be_json(tmp_path):
    a = Fake("A", ["m"])
    cfg = "channels:\n" f"  - id: a\n    base_url: {a.base_url}\n"
    (tmp_path / "quiet").mkdir()
    (tmp_path / "json").mkdir()
    quiet = loud = None
    try:
        quiet = Router(tmp_path / "quiet", cfg, cp_env={"RUST_LOG": "warn"})
        loud = Router(tmp_path / "json", cfg, cp_args=["--log-format", "json"])
        assert quiet.chat("m").status == 200 and loud.chat("m").status == 200
        quiet_log = (tmp_path / "quiet" / "control-plane.log").read_text()
        assert "control plane listening" not in quiet_log and " INFO " not in quiet_log
        lines = [l for l in (tmp_path / "json" / "control-plane.log").read_text().splitlines() if l.startswith("{")]
        events = [json.loads(l) for l in lines]
        assert any(e.get("level") == "INFO" and "control plane listening" in e.get("message", "") for e in events), lines
        assert all("timestamp" in e for e in events)
    finally:
        for x in (quiet, loud, a):
            if x:
                x.stop()


def test_every_command_has_useful_help_and_unknown_flags_are_refused():
    out = subprocess.run([SAR_BIN, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "render-envoy", "check", "explain"):
        assert command in out
        sub = subprocess.run([SAR_BIN, command, "--help"], capture_output=True, text=True, check=True).stdout
        assert "--config" in sub and "Usage: smart-router " + command in sub
    bad = subprocess.run([SAR_BIN, "check", "-x", "--config", "router.yaml"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unexpected argument '-x'" in bad.stderr
