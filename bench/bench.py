#!/usr/bin/env python3
"""`make bench`: what the router adds over bare Envoy, measured in one run.

Against one fast Rust upstream (sar-bench upstream), with a 1 KB chat request:
  direct        load generator -> upstream
  bare-envoy    -> Envoy (listener, one cluster, router filter only) -> upstream
  router        -> Envoy + Smart AI Router (3-channel table) -> upstream
  router-38x    -> the same with a 38-channel / 3,400-model table
  router-fo     -> router failing over once per request (first channel answers 503)
For each: requests/s, p50/p99 latency at concurrency 1 and 16, and Envoy's CPU
time per request (utime+stime from /proc). Prints a table, writes build/bench.json.
Numbers, not assertions: tests assert behaviour, this reports cost.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import Router, envoy_bin, free_port, request, wait_for  # noqa: E402

BENCH = os.environ.get("SAR_BENCH_BIN", str(ROOT / "target/release/sar-bench"))
DURATION_MS = int(os.environ.get("BENCH_DURATION_MS", "4000"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_upstream(*extra):
    p = subprocess.Popen([BENCH, "upstream", "--port", "0", "--threads", "1", *extra], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "LISTENING", "bench upstream did not start"
    return p, int(line[1])


def load(url, concurrency, body_file, first_event=False):
    args = [BENCH, "load", "--url", url, "--concurrency", str(concurrency), "--duration-ms", str(DURATION_MS),
            "--body", body_file, "--threads", "1"]
    if first_event:
        args.append("--first-event")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(name, url, pid, body_file, results, concurrencies=(1, 16)):
    row = {"target": name}
    for c in concurrencies:
        load(url, c, body_file)  # warm-up pass (connections, VM, table)
        before = cpu_seconds(pid) if pid else 0.0
        r = load(url, c, body_file)
        after = cpu_seconds(pid) if pid else 0.0
        cpu_us = (after - before) * 1e6 / r["requests"] if pid and r["requests"] else None
        row[f"c{c}"] = {**r, "proxy_cpu_us_per_req": cpu_us}
    if pid:
        row["proxy_rss_mb"] = rss_mb(pid)
    results.append(row)
    print(f"  measured {name}", file=sys.stderr)
    return row


def bare_envoy(tmp, upstream_port):
    port, admin = free_port(), free_port()
    cfg = Path(tmp) / "bare.yaml"
    cfg.write_text(f"""
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
""")
    p = subprocess.Popen([envoy_bin(), "-c", str(cfg), "--base-id", str(port), "--concurrency", "1", "-l", "error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: request(admin, "GET", "/ready", timeout=2).status == 200, what="bare envoy")
    return p, port


def router_config(channels, extra=""):
    return "routing:\n  debug_headers: true\n" + extra + "channels:\n" + "".join(channels)


def channel(cid, port, models=None, priority=10):
    text = f"  - id: {cid}\n    base_url: http://127.0.0.1:{port}/v1\n    api_key: bench-key-{cid}\n    priority: {priority}\n"
    if models is not None:
        text += f"    discover: false\n    configured_models: {json.dumps(models)}\n"
    return text


def main():
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        body_file = str(Path(tmp) / "body.json")
        filler = "x" * 900
        Path(body_file).write_text(json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": filler}]}))
        up, up_port = start_upstream()
        failing, failing_port = start_upstream("--fail-status", "503")
        procs = [up, failing]
        try:
            measure("direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", None, body_file, results)

            bare, bare_port = bare_envoy(tmp, up_port)
            procs.append(bare)
            measure("bare-envoy", f"http://127.0.0.1:{bare_port}/v1/chat/completions", bare.pid, body_file, results)
            bare.terminate()

            variants = {
                "router": [channel("a", up_port, priority=1), channel("b", up_port, ["other"]), channel("c", up_port, ["other2"])],
                "router-38x": [channel("a", up_port, priority=1)] + [
                    channel(f"ch{i:02d}", up_port, [f"vendor{i}/model-{j}-{i}b:free" for j in range(92)])
                    for i in range(37)],
                "router-fo": [channel("bad", failing_port, ["bench-model"], priority=1), channel("a", up_port, priority=2)],
            }
            for name, chans in variants.items():
                d = Path(tmp) / name
                d.mkdir()
                # Failing over on every request needs a breaker that never opens
                # (it would take the failing channel out after three failures).
                extra = "  circuit_breaker: {min_failures: 1000000000}\n" if name == "router-fo" else ""
                r = Router(d, router_config(chans, extra), concurrency=1)
                try:
                    assert r.chat("bench-model").status == 200
                    measure(name, f"http://127.0.0.1:{r.api_port}/v1/chat/completions", r.envoy.pid, body_file, results)
                finally:
                    r.stop()

            # Streaming: time to first event, bare Envoy vs router, concurrency 1.
            stream_up, stream_port = start_upstream("--stream-events", "20", "--event-delay-ms", "5")
            procs.append(stream_up)
            Path(body_file + ".s").write_text(json.dumps({"model": "bench-model", "stream": True,
                                                          "messages": [{"role": "user", "content": filler}]}))
            bare, bare_port = bare_envoy(tmp, stream_port)
            procs.append(bare)
            ttfe = {"bare-envoy": load(f"http://127.0.0.1:{bare_port}/v1/chat/completions", 1, body_file + ".s", True)}
            bare.terminate()
            d = Path(tmp) / "stream"
            d.mkdir()
            r = Router(d, router_config([channel("a", stream_port, priority=1)]), concurrency=1)
            try:
                ttfe["router"] = load(f"http://127.0.0.1:{r.api_port}/v1/chat/completions", 1, body_file + ".s", True)
            finally:
                r.stop()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()

    resolve = json.loads(subprocess.run([BENCH, "resolve"], check=True, capture_output=True, text=True).stdout)
    report(results, ttfe, resolve)


def report(results, ttfe, resolve):
    by = {r["target"]: r for r in results}
    bare = by.get("bare-envoy", {})
    lines = [f"Smart AI Router bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
             f"{DURATION_MS} ms per measurement, 1 KB chat request, Envoy --concurrency 1",
             "", f"{'target':<12} {'c1 p50':>8} {'c1 p99':>8} {'c1 cpu/req':>11} {'c16 rps':>9} {'c16 p50':>8} "
                 f"{'c16 p99':>8} {'c16 cpu/req':>12} {'cpu x bare c1':>14} {'cpu x bare c16':>15} {'rss MB':>7}"]
    for r in results:
        c1, c16 = r["c1"], r["c16"]

        def ratio(c):
            b = bare.get(c, {}).get("proxy_cpu_us_per_req")
            v = r[c]["proxy_cpu_us_per_req"]
            return f"{v / b:.2f}" if b and v else "-"

        def cpu(c):
            v = r[c]["proxy_cpu_us_per_req"]
            return f"{v:.0f} us" if v else "-"

        r["cpu_ratio_c1"] = ratio("c1")
        r["cpu_ratio_c16"] = ratio("c16")
        lines.append(f"{r['target']:<12} {c1['p50_ms']:>6.3f}ms {c1['p99_ms']:>6.3f}ms {cpu('c1'):>11} "
                     f"{c16['rps']:>9.0f} {c16['p50_ms']:>6.3f}ms {c16['p99_ms']:>6.3f}ms {cpu('c16'):>12} "
                     f"{ratio('c1'):>14} {ratio('c16'):>15} {r.get('proxy_rss_mb', 0):>7.1f}")
        if c1["errors"] or c16["errors"]:
            lines.append(f"{'':<12} errors: c1 {c1['errors']}, c16 {c16['errors']}")
    direct = by.get("direct", {}).get("c1", {}).get("p50_ms")
    router = by.get("router", {}).get("c1", {}).get("p50_ms")
    if direct is not None and router is not None:
        lines.append(f"\nadded p50 at c1 over direct: router {router - direct:.3f} ms, "
                     f"bare Envoy {bare['c1']['p50_ms'] - direct:.3f} ms")
    lines.append(f"streaming time to first event (p50, c1): bare Envoy {ttfe['bare-envoy']['p50_ms']:.3f} ms, "
                 f"router {ttfe['router']['p50_ms']:.3f} ms")
    lines.append("\nmodel resolution in router-core (native, one thread):")
    for t in resolve:
        lines.append(f"  {t['table']:<34} build {t['build_ms']:7.1f} ms   resolve p50 {t['resolve_p50_us']:.2f} us"
                     f"   p99 {t['resolve_p99_us']:.2f} us")
    print("\n".join(lines))
    out = ROOT / "build" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "loadavg": os.getloadavg(), "results": results,
                               "time_to_first_event": ttfe, "resolve": resolve}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
