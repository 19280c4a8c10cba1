"""End-to-end harness: real Envoy + real control plane + fake providers.

Everything listens on 127.0.0.1 with ephemeral ports, so tests run in parallel.
Only the providers are fake (tests/fake_provider.py); the control plane and the
filter are the real binaries built by `make build`.

Paths come from the environment (the Makefile sets them):
  SAR_BIN   control plane binary   [target/release/smart-router]
  SAR_WASM  filter                  [target/wasm32-wasip1/release/router_filter.wasm]
  SAR_DYNMOD  native dynamic module  [target/release/libsmart_router.so]
  SAR_FILTER  `wasm` (default) or `dynamic-module`: which one every Router uses
  ENVOY     envoy command            [.venv/bin/envoy, else envoy on PATH]
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tests")
SAR_BIN = os.environ.get("SAR_BIN", os.path.join(ROOT, "target/release/smart-router"))
SAR_WASM = os.environ.get("SAR_WASM", os.path.join(ROOT, "target/wasm32-wasip1/release/router_filter.wasm"))
SAR_DYNMOD = os.environ.get("SAR_DYNMOD", os.path.join(ROOT, "target/release/libsmart_router.so"))
FILTER = os.environ.get("SAR_FILTER", "wasm")


def envoy_bin():
    if os.environ.get("ENVOY"):
        return os.environ["ENVOY"]
    local = os.path.join(ROOT, ".venv/bin/envoy")
    return local if os.path.exists(local) else (shutil.which("envoy") or "envoy")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessExited(AssertionError):
    """A process the harness waits on exited before it became ready."""


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition", process=None, log=None):
    """Poll `predicate` until it returns something true. A false value means "not
    yet", and so does a connection error (a process still starting, or restarting);
    any other exception (an assertion in the predicate: an unexpected status, a
    wrong body) fails at once, so a predicate's failure is never hidden."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise ProcessExited(f"{what}: process exited with {process.returncode} before it was ready\n{tail}")
        try:
            last = predicate()
            if last:
                return last
        except OSError as e:  # connection refused or reset: not up (again) yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def assert_error(resp, status, code):
    """An OpenAI-shaped error: this status, JSON, `{"error": {"message", "type",
    "code"}}` with this code. Returns the error object."""
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    err = resp.json()["error"]
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["code"] == code, err
    return err


def request(port, method, path, body=None, headers=None, timeout=30, tls=False):
    """One HTTP/1.1 exchange with 127.0.0.1:port (`tls`: HTTPS without verifying
    the certificate, for the test's own calls to a TLS fake)."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    data = body
    if body is not None and not isinstance(body, (bytes, str)):
        data = json.dumps(body).encode()
        h.setdefault("content-type", "application/json")
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
    finally:
        conn.close()


# No hot restart: tests run many Envoys at once, and hot restart makes each
# claim a shared-memory base id (a clash exits Envoy).
ENVOY_ARGS = ["--disable-hot-restart", "-l", "warning", "--component-log-level", "wasm:info,dynamic_modules:info"]


class Fake:
    """A fake provider process."""

    def __init__(self, name, models, keys=(), log_dir=None, tls=None, port=0):
        """`tls`: (certificate, key) paths: the fake speaks HTTPS as `localhost`.
        `port`: listen there (to take over a stopped fake's address)."""
        self.name = name
        self.tls = tls is not None
        args = [sys.executable, os.path.join(HERE, "fake_provider.py"), "--port", str(port),
                "--name", name, "--models", ",".join(models)]
        for k in keys:
            args += ["--key", k]
        if tls:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not (line and line[0] == "LISTENING"):
            self.stop()
            raise AssertionError(f"fake provider {name} did not start")
        self.port = int(line[1])
        self.base_url = (f"https://localhost:{self.port}/v1" if self.tls else f"http://127.0.0.1:{self.port}/v1")

    def control(self, what, body=None, method="POST"):
        r = request(self.port, method, f"/_control/{what}", body if body is not None else {}, tls=self.tls)
        assert r.status == 200, r
        return r.json()

    def behave(self, **behavior):
        return self.control("behavior", behavior)

    def requests(self, path_suffix="/chat/completions"):
        return [r for r in self.control("requests", method="GET") if r["path"].endswith(path_suffix)]

    def reset(self):
        self.control("reset")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Router:
    """The product: control plane + Envoy rendered from one YAML config."""

    def __init__(self, tmp_path, config_text, concurrency=1, wait_table=True, control_plane_extra="", filter=None,
                 server_extra="", cp_env=None, cp_args=()):
        self.dir = tmp_path
        self.cp_env = cp_env
        self.cp_args = list(cp_args)
        self.filter = filter or FILTER
        self.control_plane_extra = control_plane_extra
        self.server_extra = server_extra
        self.config_path = tmp_path / "router.yaml"
        self.envoy = None
        self.cp = None
        self.concurrency = concurrency
        # The ports are picked free and then handed to processes, so another
        # process can take one in between (Envoy's own upstream connections use
        # the same ephemeral range). A process that exits before it is ready is
        # started again on fresh ports; its log says why it exited.
        for attempt in range(3):
            self.api_port = free_port()
            self.admin_port = free_port()
            self.cp_port = free_port()
            self.write_config(config_text)
            try:
                self.start_control_plane()
                self.render()
                self.start_envoy()
                break
            except ProcessExited as e:
                self.stop()
                if attempt == 2 or "in use" not in str(e):
                    raise
            except BaseException:
                self.stop()
                raise
        if wait_table:
            try:
                self.wait_table()
            except BaseException:
                # Whatever was started is stopped, even when setup fails.
                self.stop()
                raise

    def header(self):
        return (f"server:\n  listen: 127.0.0.1:{self.api_port}\n  admin: 127.0.0.1:{self.admin_port}\n"
                + self.server_extra
                + f"control_plane:\n  listen: 127.0.0.1:{self.cp_port}\n  data_dir: {self.dir}/data\n"
                f"  reload_poll_ms: 100\n  table_poll_ms: 100\n  discovery_timeout: 3\n"
                + self.control_plane_extra)

    def write_config(self, config_text):
        text = self.header() + config_text
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def start_control_plane(self):
        self.cp_log = open(self.dir / "control-plane.log", "ab")
        env = {**os.environ, **(self.cp_env or {})}
        self.cp = subprocess.Popen([SAR_BIN, *self.cp_args, "serve", "--config", str(self.config_path)],
                                   stdout=self.cp_log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: request(self.cp_port, "GET", "/healthz", timeout=2).status == 200,
                 what="control plane /healthz", process=self.cp, log=self.dir / "control-plane.log")

    def stop_control_plane(self):
        if self.cp and self.cp.poll() is None:
            self.cp.send_signal(signal.SIGTERM)
            self.cp.wait(timeout=10)

    def render(self):
        self.envoy_config = self.dir / "envoy.yaml"
        which = ["--dynamic-module", SAR_DYNMOD] if self.filter == "dynamic-module" else ["--wasm", SAR_WASM]
        subprocess.run([SAR_BIN, "render-envoy", "--config", str(self.config_path), *which,
                        "--out", str(self.envoy_config)], check=True)

    def start_envoy(self):
        self.envoy_log = open(self.dir / "envoy.log", "ab")
        self.envoy = subprocess.Popen(
            [envoy_bin(), "-c", str(self.envoy_config), "--concurrency", str(self.concurrency), *ENVOY_ARGS],
            stdout=self.envoy_log, stderr=subprocess.STDOUT)
        wait_for(lambda: request(self.admin_port, "GET", "/ready", timeout=2).status == 200, what="envoy ready",
                 process=self.envoy, log=self.dir / "envoy.log")

    def wait_table(self, timeout=20):
        return wait_for(lambda: self.get("/health").status == 200 and self.get("/health").json(),
                        timeout=timeout, what="router /health")

    def logs(self):
        """Both whole logs (for scans that must see every line)."""
        out = []
        for name in ("control-plane.log", "envoy.log"):
            p = self.dir / name
            if p.exists():
                out.append(f"--- {name}\n" + p.read_text(errors="replace"))
        return "\n".join(out)

    # client side

    def get(self, path, headers=None):
        return request(self.api_port, "GET", path, headers=headers)

    def chat(self, model, stream=False, headers=None, **extra):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        if stream:
            body["stream"] = True
        return request(self.api_port, "POST", "/v1/chat/completions", body, headers=headers)

    def post_raw(self, path, data, headers=None):
        h = {"content-type": "application/json", **(headers or {})}
        return request(self.api_port, "POST", path, data, headers=h)

    def admin_headers(self):
        """The control plane's admin token, as written to `data_dir`."""
        return {"authorization": f"Bearer {(self.dir / 'data' / 'admin.token').read_text().strip()}"}

    def stats(self):
        r = request(self.admin_port, "GET", "/stats")
        return r.body.decode()

    def prometheus(self):
        return request(self.admin_port, "GET", "/stats/prometheus").body.decode()

    def stop(self):
        for p in (self.envoy, self.cp):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.envoy, self.cp):
            if p:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def channel_yaml(cid, fake, models=None, priority=10, key=None, extra=""):
    """A channel block for a fake provider."""
    text = (f"  - id: {cid}\n    base_url: {fake.base_url}\n    priority: {priority}\n")
    if key:
        text += f"    api_key: {key}\n"
    if models is not None:
        text += f"    discover: false\n    configured_models: {json.dumps(models)}\n"
    return text + extra
