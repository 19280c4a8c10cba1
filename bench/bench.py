#!/usr/bin/env python3
"""`make bench`: what the router adds over bare Envoy, measured in one run.

Against one fast Rust upstream (sar-bench upstream), with a 1 KB chat request:
  direct        load generator -> upstream
  bare-envoy    -> Envoy (listener, one cluster, router filter only) -> upstream
  router        -> Envoy + Smart AI Router (3-channel table) -> upstream
  router-38x    -> the same with a 38-channel / 3,400-model table
  router-fo     -> router failing over once per request (first channel answers 503)
  *-dm          -> the same three with the native dynamic module instead of wasm
  litellm       -> LiteLLM's proxy on the same upstream, when installed (optional)
  tensorzero    -> TensorZero's gateway (the `tensorzero` wheel), when installed (optional)
For each: p50/p99 latency at concurrency 1, requests/s at 16 and 64, and Envoy's
CPU time per request (utime+stime from /proc) at 1, 16 and 64, measured in
interleaved rounds; load from wrk when installed (else sar-bench load). Then
streaming time to first event and router-core's resolution speed. Prints a
table, writes build/bench.json.
Numbers, not assertions: tests assert behaviour, this reports cost.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import instructions  # noqa: E402  (bench/instructions.py)
from harness import Router, envoy_bin, free_port, request, wait_for  # noqa: E402

BENCH = os.environ.get("SAR_BENCH_BIN", str(ROOT / "target/release/sar-bench"))
DURATION_MS = int(os.environ.get("BENCH_DURATION_MS", "4000"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# The proxy under test gets a core of its own; the load generator, the upstreams
# and the control planes share the others. On two shared cores the proxy otherwise
# competes with wrk and the upstream for caches and time slices, and its CPU per
# request moved 10-20% between runs. BENCH_PIN=0 turns this off.
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
PIN = os.environ.get("BENCH_PIN", "1") != "0" and len(CPUS) >= 2
PROXY_CPUS = set(CPUS[-1:])
LOAD_CPUS = set(CPUS[:-1])


def pin(pid, cpus):
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit it)."""
    if not PIN or not pid:
        return
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpus)
    except OSError:
        pass  # a thread that just ended


def on_load_cpus():
    """preexec_fn for a load generator."""
    if PIN:
        os.sched_setaffinity(0, LOAD_CPUS)


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_upstream(*extra):
    p = subprocess.Popen([BENCH, "upstream", "--port", "0", "--threads", "1", *extra], stdout=subprocess.PIPE, text=True,
                         preexec_fn=on_load_cpus)
    line = p.stdout.readline().split()
    assert line and line[0] == "LISTENING", "bench upstream did not start"
    return p, int(line[1])


WRK = shutil.which("wrk")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local auth = os.getenv("SAR_BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["authorization"] = auth end
local f = assert(io.open(os.getenv("SAR_BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
"""


def wrk_ms(text):
    """A wrk latency like `212.00us`, `1.20ms` or `1.05s`, in milliseconds."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return float(text)


def load_wrk(url, concurrency, body_file, auth="", duration_ms=None):
    """wrk (Debian) with one thread: requests, errors, rps and latency percentiles."""
    script = Path(body_file).with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    seconds = max(1, round((duration_ms or DURATION_MS) / 1000))
    out = subprocess.run([WRK, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], check=True, capture_output=True, text=True, preexec_fn=on_load_cpus,
                         env={**os.environ, "SAR_BENCH_BODY": body_file, "SAR_BENCH_AUTH": auth}).stdout
    r = {"requests": 0, "errors": 0, "rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "tool": "wrk"}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("50%", "99%"):
            r[f"p{parts[0][:-1]}_ms"] = wrk_ms(parts[1])
        elif "requests in" in line:
            r["requests"] = int(parts[0])
        elif line.startswith("Requests/sec:"):
            r["rps"] = float(parts[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r["errors"] += int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            r["errors"] += sum(int(x.rstrip(",")) for x in parts[3::2])
    return r


def load(url, concurrency, body_file, first_event=False, auth="", duration_ms=None):
    """Load from `concurrency` keep-alive connections for DURATION_MS. wrk when it is
    installed (`make bench` installs it from Debian); sar-bench's own generator
    otherwise, and always for time to first streamed event, which wrk cannot see."""
    if WRK and not first_event:
        return load_wrk(url, concurrency, body_file, auth, duration_ms)
    args = [BENCH, "load", "--url", url, "--concurrency", str(concurrency), "--duration-ms",
            str(duration_ms or DURATION_MS),
            "--body", body_file, "--threads", "1"]
    if auth:
        args += ["--header", f"authorization:{auth}"]
    if first_event:
        args.append("--first-event")
    out = subprocess.run(args, check=True, capture_output=True, text=True, preexec_fn=on_load_cpus).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "tool": "sar-bench"}


CONCURRENCIES = (1, 16, 64)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def measure_once(url, pid, body_file, warm_up, auth=""):
    """One pass over the concurrencies: load results plus Envoy's CPU per request."""
    row = {}
    for c in CONCURRENCIES:
        if warm_up:
            load(url, c, body_file, auth=auth)  # connections, VM, table
        before = cpu_seconds(pid) if pid else 0.0
        r = load(url, c, body_file, auth=auth)
        after = cpu_seconds(pid) if pid else 0.0
        cpu_us = (after - before) * 1e6 / r["requests"] if pid and r["requests"] else None
        row[f"c{c}"] = {**r, "proxy_cpu_us_per_req": cpu_us}
    return row


PAIRS = int(os.environ.get("BENCH_PAIRS", "12"))
PAIR_MS = int(os.environ.get("BENCH_PAIR_MS", "2000"))


def cpu_per_request(url, pid, body_file, concurrency, auth=""):
    before = cpu_seconds(pid)
    r = load(url, concurrency, body_file, auth=auth, duration_ms=PAIR_MS)
    return (cpu_seconds(pid) - before) * 1e6 / r["requests"] if r["requests"] else None


def paired_ratios(base, others, body_file, concurrency=16):
    """CPU per request against bare Envoy, measured as PAIRS back-to-back pairs
    (bare then router, the next pair router then bare): each ratio compares two
    measurements a few seconds apart, so the machine's slow swings in speed (this
    VM's direct rps moved 35k-100k between runs) cancel. Median and range."""
    _, base_url, base_pid, _ = base
    out = {}
    for name, url, pid, auth in others:
        ratios = []
        for i in range(PAIRS):
            order = [(base_url, base_pid, ""), (url, pid, auth)]
            if i % 2:
                order.reverse()
            cpu = {u: cpu_per_request(u, p_, body_file, concurrency, a) for u, p_, a in order}
            if cpu[base_url] and cpu[url]:
                ratios.append(cpu[url] / cpu[base_url])
        if ratios:
            out[name] = {"median": median(ratios), "min": min(ratios), "max": max(ratios), "pairs": ratios}
    return out


def median(values):
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def combine(name, rounds, pid):
    """Rounds of one target: the least CPU per request (interference from the load
    generator and the other processes on two cores only ever adds), median latencies."""
    row = {"target": name, "rounds": rounds}
    for c in CONCURRENCIES:
        key = f"c{c}"
        cpus = [r[key]["proxy_cpu_us_per_req"] for r in rounds if r[key]["proxy_cpu_us_per_req"]]
        row[key] = {
            "rps": median([r[key]["rps"] for r in rounds]),
            "p50_ms": median([r[key]["p50_ms"] for r in rounds]),
            "p99_ms": median([r[key]["p99_ms"] for r in rounds]),
            "errors": sum(r[key]["errors"] for r in rounds),
            "proxy_cpu_us_per_req": min(cpus) if cpus else None,
        }
    if pid:
        row["proxy_rss_mb"] = rss_mb(pid)
    return row


LITELLM = os.environ.get("SAR_BENCH_LITELLM") or shutil.which("litellm")
LITELLM_KEY = "sk-smart-router-bench"


def start_litellm(tmp, upstream_port):
    """LiteLLM's proxy (optional peer target: `pip install 'litellm[proxy]'`, or set
    SAR_BENCH_LITELLM to its `litellm` command), one model on the same upstream."""
    port = free_port()
    cfg = Path(tmp) / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: bench-key
""")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    p = subprocess.Popen([LITELLM, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                          "--num_workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for(lambda: request(port, "GET", "/health/liveliness", timeout=2).status == 200, timeout=120,
             what="litellm proxy")
    return p, port


def request_ok(url, body_file):
    """One POST of `body_file` to `url` answered 200."""
    from urllib.parse import urlsplit
    u = urlsplit(url)
    try:
        return request(u.port, "POST", u.path, json.loads(Path(body_file).read_text()), timeout=5).status == 200
    except OSError:
        return False


def tensorzero_installed():
    return subprocess.run([sys.executable, "-c", "import tensorzero"], capture_output=True).returncode == 0


def start_tensorzero(tmp, upstream_port, body_file):
    """TensorZero's gateway (bench/tensorzero_gateway.py), one model on the same
    upstream. It names models `tensorzero::model_name::<name>`, so it gets its own
    copy of the request body."""
    cfg = Path(tmp) / "tensorzero.toml"
    cfg.write_text(f"""[models.bench-model]
routing = ["up"]

[models.bench-model.providers.up]
type = "openai"
model_name = "bench-model"
api_base = "http://127.0.0.1:{upstream_port}/v1/"
api_key_location = "none"
""")
    body = json.loads(Path(body_file).read_text())
    body["model"] = "tensorzero::model_name::bench-model"
    tz_body = str(Path(tmp) / "body-tensorzero.json")
    Path(tz_body).write_text(json.dumps(body))
    env = {**os.environ, "RUST_LOG": "error"}
    p = subprocess.Popen([sys.executable, str(ROOT / "bench" / "tensorzero_gateway.py"), str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    base = p.stdout.readline().strip()
    if not base.startswith("http://"):
        p.kill()
        raise RuntimeError("tensorzero gateway did not start")
    return p, f"{base}/chat/completions", tz_body


def bare_config(port, admin, upstream_port):
    """Bare Envoy: the router's listener and one cluster for the same upstream, no filters."""
    return f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bare
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: up, timeout: 0s}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{cluster_name: up, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}}}]}}]}}
"""


def bare_envoy(tmp, upstream_port):
    port, admin = free_port(), free_port()
    cfg = Path(tmp) / "bare.yaml"
    cfg.write_text(bare_config(port, admin, upstream_port))
    # Started as the harness starts the routers' Envoys (no hot restart), so the
    # two differ only by the router.
    p = subprocess.Popen([envoy_bin(), "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1", "-l", "error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: request(admin, "GET", "/ready", timeout=2).status == 200, what="bare envoy")
    return p, port


def router_config(channels, extra="", top=""):
    return top + "routing:\n  debug_headers: true\n" + extra + "channels:\n" + "".join(channels)


# The `-nousage` targets: usage accounting off (no records, no tokens or cost read).
def no_usage(channels):
    return router_config(channels, top="usage: {enabled: false}\n")


# The `-full` targets: everything a request can be held to, far from its limits:
# a client token with a rate limit, a global budget, and request limits on the
# channel that answers (each counted in Envoy's shared state on every request).
BENCH_TOKEN = "sar-bench-token-0001"
FULL = ("auth:\n  enabled: true\n  api_tokens:\n"
        f"    - {{id: bench, token: {BENCH_TOKEN}, limits: {{requests_per_minute: 1000000000}}}}\n"
        "budgets:\n  - {id: bench, limit_usd: 100000, period: month}\n")


def full(channels):
    limited = [c.replace("    priority: 1\n", "    priority: 1\n    limits: {requests_per_minute: 1000000000}\n", 1)
               for c in channels]
    return router_config(limited, top=FULL)


def channel(cid, port, models=None, priority=10):
    # Priced, so each answer's cost is worked out and sent (the full accounting path).
    text = (f"  - id: {cid}\n    base_url: http://127.0.0.1:{port}/v1\n    api_key: bench-key-{cid}\n"
            f"    priority: {priority}\n    pricing: {{input: 0.15, output: 0.6}}\n")
    if models is not None:
        text += f"    discover: false\n    configured_models: {json.dumps(models)}\n"
    return text


INGEST_RECORDS = int(os.environ.get("BENCH_INGEST_RECORDS", "100000"))
INGEST_BATCH = 5000  # the size of Envoy's largest delivery


def ingest_rate(tmp, up_port, body_file):
    """Records per second the control plane stores into SQLite (its default) while
    Envoy routes at concurrency 16, and the routing latency with and without it.
    The records are synthetic (JSON lines, unique ids) and POSTed to /v1/usage in
    Envoy's largest batches, one after the other, as Envoy's deliveries are."""
    d = Path(tmp) / "ingest"
    d.mkdir()
    r = Router(d, router_config([channel("a", up_port, priority=1)]), concurrency=1, filter="dynamic-module")
    try:
        pin(r.envoy.pid, PROXY_CPUS)
        pin(r.cp.pid, LOAD_CPUS)
        token = (d / "data" / "table.token").read_text().strip()
        url = f"http://127.0.0.1:{r.api_port}/v1/chat/completions"
        now = int(time.time() * 1000)
        batches = []
        for b in range(INGEST_RECORDS // INGEST_BATCH):
            batches.append("\n".join(json.dumps({
                "id": f"bench-{b}-{i}", "ts_ms": now - i, "model_requested": "bench-model",
                "model_used": "bench-model", "channel": f"ch{i % 8}", "provider": "openai_compatible",
                "stream": i % 3 == 0, "status": 200, "attempts": 1, "prompt_tokens": 230 + i % 50,
                "completion_tokens": 40 + i % 20, "cost_pico": 58_500_000, "latency_ms": 3, "ttft_ms": 2})
                for i in range(INGEST_BATCH)).encode())
        quiet = load(url, 16, body_file, duration_ms=DURATION_MS)
        done = {}

        def post_all():
            start = time.monotonic()
            for body in batches:
                resp = request(r.cp_port, "POST", "/v1/usage", body, timeout=120,
                               headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"})
                if resp.status != 204:
                    done["error"] = resp.status
                    return
            done["seconds"] = time.monotonic() - start

        import threading
        poster = threading.Thread(target=post_all)
        poster.start()
        busy = load(url, 16, body_file, duration_ms=DURATION_MS)
        poster.join()
        seconds = done.get("seconds")
        return {"records": len(batches) * INGEST_BATCH, "seconds": seconds, "error": done.get("error"),
                "records_per_s": len(batches) * INGEST_BATCH / seconds if seconds else None,
                "routing_p50_ms_quiet": quiet["p50_ms"], "routing_p50_ms_ingesting": busy["p50_ms"],
                "routing_rps_quiet": quiet["rps"], "routing_rps_ingesting": busy["rps"]}
    finally:
        r.stop()


def instructions_only():
    """`make bench-instructions`: only the callgrind counts (a few minutes), for
    comparing a change's cost on the request path before and after."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file = str(Path(tmp) / "body.json")
        Path(body_file).write_text(json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "x" * 900}]}))
        up, up_port = start_upstream()
        try:
            three = [channel("a", up_port, priority=1), channel("b", up_port, ["other"]),
                     channel("c", up_port, ["other2"])]
            counted = instructions.run(
                tmp, up_port, bare_config,
                [("router-dm", router_config(three), "dynamic-module"),
                 ("router-dm-nousage", no_usage(three), "dynamic-module"),
                 ("router-dm-full", full(three), "dynamic-module"),
                 ("router", router_config(three), "wasm"),
                 ("router-nousage", no_usage(three), "wasm"),
                 ("router-full", full(three), "wasm")],
                # (The token is sent to every target; only the -full ones ask for it.)
                lambda url, seconds: load(url, 16, body_file, auth=f"Bearer {BENCH_TOKEN}",
                                          duration_ms=seconds * 1000))
        finally:
            up.terminate()
    base = next((c["instructions_per_request"] for c in counted if c["target"] == "bare-envoy"), None)
    for c in counted:
        n = c["instructions_per_request"]
        print(f"  {c['target']:<14} {n or 0:>9,} {f'{n / base:.3f}x bare' if n and base else '-':>12}")
    out = ROOT / "build" / "instructions.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(counted, indent=2))


def main():
    if "--instructions-only" in sys.argv:
        return instructions_only()
    if "--docs" in sys.argv:
        return write_docs(json.loads((ROOT / "build" / "bench.json").read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        body_file = str(Path(tmp) / "body.json")
        filler = "x" * 900
        Path(body_file).write_text(json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": filler}]}))
        up, up_port = start_upstream()
        failing, failing_port = start_upstream("--fail-status", "503")
        procs = [up, failing]
        routers = []
        try:
            # Every target runs at once and the rounds interleave them, so a slow
            # minute of the machine hits all targets alike.
            targets = [("direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", None)]
            bare, bare_port = bare_envoy(tmp, up_port)
            procs.append(bare)
            pin(bare.pid, PROXY_CPUS)
            targets.append(("bare-envoy", f"http://127.0.0.1:{bare_port}/v1/chat/completions", bare.pid))
            peers = []
            if LITELLM:
                # Measured on its own before the others start, then stopped: its
                # background work (hundreds of times Envoy's per request) would
                # disturb the interleaved rounds.
                lite, lite_port = start_litellm(tmp, up_port)
                procs.append(lite)
                pin(lite.pid, PROXY_CPUS)
                url = f"http://127.0.0.1:{lite_port}/v1/chat/completions"
                runs = [measure_once(url, lite.pid, body_file, warm_up=i == 0, auth=f"Bearer {LITELLM_KEY}")
                        for i in range(ROUNDS)]
                peers.append(combine("litellm", runs, lite.pid))
                lite.terminate()
                print("  litellm done", file=sys.stderr)
            if tensorzero_installed():
                # Measured on its own too: it is a different process with its own
                # body (TensorZero's model names).
                tz, tz_url, tz_body = start_tensorzero(tmp, up_port, body_file)
                procs.append(tz)
                pin(tz.pid, PROXY_CPUS)
                wait_for(lambda: request_ok(tz_url, tz_body), timeout=60, what="tensorzero gateway")
                runs = [measure_once(tz_url, tz.pid, tz_body, warm_up=i == 0) for i in range(ROUNDS)]
                peers.append(combine("tensorzero", runs, tz.pid))
                tz.terminate()
                print("  tensorzero done", file=sys.stderr)
            three = [channel("a", up_port, priority=1), channel("b", up_port, ["other"]),
                     channel("c", up_port, ["other2"])]
            big = [channel("a", up_port, priority=1)] + [
                channel(f"ch{i:02d}", up_port, [f"vendor{i}/model-{j}-{i}b:free" for j in range(92)])
                for i in range(37)]
            fo = [channel("bad", failing_port, ["bench-model"], priority=1), channel("a", up_port, priority=2)]
            # The wasm filter (portable default) and the native dynamic module, same tables.
            variants = [(f"{name}{suffix}", chans, filt)
                        for suffix, filt in (("", "wasm"), ("-dm", "dynamic-module"))
                        for name, chans in (("router", three), ("router-38x", big), ("router-fo", fo))]
            for name, chans, filt in variants:
                d = Path(tmp) / name
                d.mkdir()
                # Failing over on every request needs a breaker that never opens
                # (it would take the failing channel out after three failures).
                extra = "  circuit_breaker: {min_failures: 1000000000}\n" if name.startswith("router-fo") else ""
                r = Router(d, router_config(chans, extra), concurrency=1, filter=filt)
                routers.append(r)
                pin(r.envoy.pid, PROXY_CPUS)
                pin(r.cp.pid, LOAD_CPUS)
                assert r.chat("bench-model").status == 200, name
                targets.append((name, f"http://127.0.0.1:{r.api_port}/v1/chat/completions", r.envoy.pid))
            # (name, url, pid[, authorization]): only the peer gateway needs a key.
            targets = [t if len(t) == 4 else (*t, "") for t in targets]
            rounds = {name: [] for name, *_ in targets}
            for i in range(ROUNDS):
                for name, url, pid, auth in targets:
                    rounds[name].append(measure_once(url, pid, body_file, warm_up=i == 0, auth=auth))
                print(f"  round {i + 1}/{ROUNDS} done", file=sys.stderr)
            results = [combine(name, rounds[name], pid) for name, _, pid, _ in targets]
            results[2:2] = peers  # after bare Envoy
            by_name = {t[0]: t for t in targets}
            paired = paired_ratios(by_name["bare-envoy"],
                                   [by_name[n] for n in ("router-dm", "router-38x-dm", "router") if n in by_name],
                                   body_file) if PAIRS > 0 else {}
            # The table-size target, paired the same way: both run the same code, so
            # pairs seconds apart say more than the rounds' minima minutes apart.
            if PAIRS > 0 and "router-dm" in by_name and "router-38x-dm" in by_name:
                table_pairs = paired_ratios(by_name["router-dm"], [by_name["router-38x-dm"]], body_file)
                paired.update({f"{n} vs router-dm": v for n, v in table_pairs.items()})
            print("  paired c16 ratios done", file=sys.stderr)
            for r in routers:
                r.stop()
            routers = []

            ingest = ingest_rate(tmp, up_port, body_file)
            print("  ingest rate done", file=sys.stderr)

            # Streaming: time to first event at concurrency 1.
            stream_up, stream_port = start_upstream("--stream-events", "20", "--event-delay-ms", "5")
            procs.append(stream_up)
            Path(body_file + ".s").write_text(json.dumps({"model": "bench-model", "stream": True,
                                                          "messages": [{"role": "user", "content": filler}]}))
            bare.terminate()
            bare, bare_port = bare_envoy(tmp, stream_port)
            procs.append(bare)
            pin(bare.pid, PROXY_CPUS)
            ttfe = {"bare-envoy": load(f"http://127.0.0.1:{bare_port}/v1/chat/completions", 1, body_file + ".s", True)}
            for name, filt in (("router", "wasm"), ("router-dm", "dynamic-module")):
                d = Path(tmp) / f"stream-{name}"
                d.mkdir()
                r = Router(d, router_config([channel("a", stream_port, priority=1)]), concurrency=1, filter=filt)
                pin(r.envoy.pid, PROXY_CPUS)
                try:
                    ttfe[name] = load(f"http://127.0.0.1:{r.api_port}/v1/chat/completions", 1, body_file + ".s", True)
                finally:
                    r.stop()

            # Instructions per request under callgrind (deterministic; see instructions.py).
            counted = []
            if os.environ.get("BENCH_CALLGRIND", "1") != "0":
                counted = instructions.run(
                    tmp, up_port, bare_config,
                    [("router-dm", router_config(three), "dynamic-module"),
                     ("router-dm-nousage", no_usage(three), "dynamic-module"),
                     ("router-dm-full", full(three), "dynamic-module"),
                     ("router-38x-dm", router_config(big), "dynamic-module"),
                     ("router", router_config(three), "wasm"),
                     ("router-nousage", no_usage(three), "wasm"),
                     ("router-full", full(three), "wasm")],
                    lambda url, seconds: load(url, 16, body_file, auth=f"Bearer {BENCH_TOKEN}",
                                              duration_ms=seconds * 1000))
        finally:
            for r in routers:
                r.stop()
            for p in procs:
                if p.poll() is None:
                    p.terminate()

    resolve = json.loads(subprocess.run([BENCH, "resolve"], check=True, capture_output=True, text=True).stdout)
    report(results, ttfe, resolve, counted, paired, ingest)


def ingest_text(ingest):
    if not ingest or not ingest.get("records_per_s"):
        return f"usage records ingested: not measured ({ingest})"
    return (f"usage records ingested into SQLite while Envoy routes at c16: {ingest['records_per_s']:,.0f}/s "
            f"({ingest['records']:,} records in {ingest['seconds']:.1f} s); routing p50 "
            f"{ingest['routing_p50_ms_quiet']:.3f} ms without, {ingest['routing_p50_ms_ingesting']:.3f} ms while ingesting; "
            f"rps {ingest['routing_rps_quiet']:.0f} and {ingest['routing_rps_ingesting']:.0f}")


def report(results, ttfe, resolve, counted, paired, ingest=None):
    by = {r["target"]: r for r in results}
    bare = by.get("bare-envoy", {})
    lines = [f"Smart AI Router bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
             f"{ROUNDS} interleaved rounds of {DURATION_MS} ms per target and concurrency, 1 KB chat request, "
             f"Envoy --concurrency 1, load from {'wrk' if WRK else 'sar-bench load'}"
             + (f"; proxy pinned to CPU {sorted(PROXY_CPUS)}, load and upstream to {sorted(LOAD_CPUS)}. " if PIN else ". ")
             + "CPU/request: least of the rounds; latency, rps: median.",
             "", f"{'target':<14} {'c1 p50':>8} {'c1 p99':>8} {'c16 rps':>8} {'c64 rps':>8} {'cpu/req c1':>10} "
                 f"{'c16':>7} {'c64':>7} {'x bare c1':>9} {'c16':>5} {'c64':>5} {'rss MB':>7}"]
    for r in results:
        def ratio(c):
            b = bare.get(c, {}).get("proxy_cpu_us_per_req")
            v = r[c]["proxy_cpu_us_per_req"]
            return f"{v / b:.2f}" if b and v else "-"

        def cpu(c):
            v = r[c]["proxy_cpu_us_per_req"]
            return f"{v:.0f}us" if v else "-"

        for c in CONCURRENCIES:
            r[f"cpu_ratio_c{c}"] = ratio(f"c{c}")
        c1 = r["c1"]
        lines.append(f"{r['target']:<14} {c1['p50_ms']:>6.3f}ms {c1['p99_ms']:>6.3f}ms {r['c16']['rps']:>8.0f} "
                     f"{r['c64']['rps']:>8.0f} {cpu('c1'):>10} {cpu('c16'):>7} {cpu('c64'):>7} {ratio('c1'):>9} "
                     f"{ratio('c16'):>5} {ratio('c64'):>5} {r.get('proxy_rss_mb', 0):>7.1f}")
        errors = {c: r[f"c{c}"]["errors"] for c in CONCURRENCIES if r[f"c{c}"]["errors"]}
        if errors:
            lines.append(f"{'':<14} errors: {errors}")
    direct = by.get("direct", {}).get("c1", {}).get("p50_ms")
    if direct is not None:
        added = ", ".join(f"{t} {by[t]['c1']['p50_ms'] - direct:.3f} ms" for t in ("bare-envoy", "router", "router-dm")
                          if t in by)
        lines.append(f"\nadded p50 at c1 over direct: {added}")
    lines.append(ingest_text(ingest))
    lines.append("streaming time to first event (p50, c1): "
                 + ", ".join(f"{t} {v['p50_ms']:.3f} ms" for t, v in ttfe.items()))
    for t, base in (("router-38x", "router"), ("router-38x-dm", "router-dm")):
        if t in by and base in by:
            parts = []
            for c in ("c1", "c16"):
                a, b = by[t][c]["proxy_cpu_us_per_req"], by[base][c]["proxy_cpu_us_per_req"]
                if a and b:
                    parts.append(f"{c} {a / b:.2f}x")
            by[t]["cpu_vs_3_channel"] = parts
            lines.append(f"3,400-model table vs 3-channel table ({t}): " + ", ".join(parts))
    if paired:
        lines.append(f"\nCPU per request vs bare Envoy at c16, {PAIRS} back-to-back pairs of {PAIR_MS} ms "
                     "(median of the pairs' ratios, range):")
        for name, v in paired.items():
            if " vs " not in name:
                lines.append(f"  {name:<14} {v['median']:.2f}x  ({v['min']:.2f}-{v['max']:.2f})")
        for name, v in paired.items():
            if " vs " in name:
                lines.append(f"3,400-model table vs 3-channel table, paired the same way ({name}): "
                             f"{v['median']:.2f}x  ({v['min']:.2f}-{v['max']:.2f})")
    if counted:
        base = next((c["instructions_per_request"] for c in counted if c["target"] == "bare-envoy"), None)
        lines.append("\ninstructions per request at c16 (callgrind, Envoy user space, deterministic):")
        for c in counted:
            n = c["instructions_per_request"]
            x = f"{n / base:.2f}x bare" if n and base else "-"
            lines.append(f"  {c['target']:<14} {n or 0:>9,} {x:>11}")
    lines.append("\nmodel resolution in router-core (native, one thread):")
    for t in resolve:
        lines.append(f"  {t['table']:<34} build {t['build_ms']:7.1f} ms   resolve p50 {t['resolve_p50_us']:.2f} us"
                     f"   p99 {t['resolve_p99_us']:.2f} us")
    print("\n".join(lines))
    out = ROOT / "build" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "loadavg": os.getloadavg(),
                               "date": time.strftime("%Y-%m-%d"), "results": results,
                               "time_to_first_event": ttfe, "resolve": resolve, "paired_cpu_ratio_c16": paired,
                               "instructions_per_request_c16": counted, "ingest": ingest}, indent=2))
    print(f"\nwrote {out}")
    write_docs(json.loads(out.read_text()))


DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:results -->", "<!-- /bench:results -->"


def write_docs(data):
    """The results section of docs/benchmarks.md, from one run's bench.json."""
    results = {r["target"]: r for r in data["results"]}
    bare = results.get("bare-envoy", {})
    counted = {c["target"]: c["instructions_per_request"] for c in data.get("instructions_per_request_c16", [])}
    paired = data.get("paired_cpu_ratio_c16", {})
    base_instr = counted.get("bare-envoy")

    def cpu(r, c):
        v = r[c]["proxy_cpu_us_per_req"]
        return f"{v:.0f} us" if v else "-"

    def ratio(r, c):
        v, b = r[c]["proxy_cpu_us_per_req"], bare.get(c, {}).get("proxy_cpu_us_per_req")
        return f"{v / b:.2f}x" if v and b else "-"

    if "tensorzero" in results:
        note = ("`tensorzero` is TensorZero's gateway from the `tensorzero` wheel with observability off"
                " (no ClickHouse or PostgreSQL), so it keeps no records; the router's rows keep one per request.")
    else:
        note = ""
    rows = ["| target | p50 c1 | rps c16 | CPU/request c1 | c16 | x bare c1 | c16 | c16 paired | instructions/request | x bare | RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        n = counted.get(name)
        p = paired.get(name)
        pm = f"{p['median']:.2f}x" if p else "-"
        rows.append(f"| `{name}` | {r['c1']['p50_ms']:.3f} ms | {r['c16']['rps']:.0f} | {cpu(r, 'c1')} | {cpu(r, 'c16')} "
                    f"| {ratio(r, 'c1')} | {ratio(r, 'c16')} | {pm} "
                    f"| {f'{n:,}' if n else '-'} | {f'{n / base_instr:.2f}x' if n and base_instr else '-'} "
                    f"| {r.get('proxy_rss_mb', 0):.0f} MB |")
    for name, n in counted.items():
        if name not in results:
            rows.append(f"| `{name}` | | | | | | | | {n:,} | {f'{n / base_instr:.2f}x' if n and base_instr else '-'} | |")
    ttfe = ", ".join(f"{t} {v['p50_ms']:.3f} ms" for t, v in data.get("time_to_first_event", {}).items())
    resolve = "; ".join(f"{t['table']}: build {t['build_ms']:.0f} ms, resolve p50 {t['resolve_p50_us']:.2f} us, "
                        f"p99 {t['resolve_p99_us']:.2f} us" for t in data.get("resolve", []))
    when = data.get("date", "")
    text = "\n".join([
        f"One run of `make bench` on {data['cores']} cores{f', {when}' if when else ''}"
        f" (load average {data['loadavg'][0]:.2f} at the end). CPU/request is the least of the rounds;"
        " instructions are callgrind's count at concurrency 16.",
        "", *rows, "", *([note, ""] if note else []),
        f"Streaming time to first event (p50, concurrency 1): {ttfe}.", "",
        ingest_text(data.get("ingest")).capitalize() + ".", "",
        f"Model resolution in `router-core`: {resolve}.",
    ])
    doc = DOCS.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOCS.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
    print(f"wrote the results into {DOCS}")


if __name__ == "__main__":
    main()
