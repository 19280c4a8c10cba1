#!/usr/bin/env python3
"""Fake OpenAI-compatible (and minimally Anthropic) LLM provider.

Used by the end-to-end tests and by `make run`. Standard library only.

    python3 tests/fake_provider.py --port PORT [--host 127.0.0.1] [--name NAME]
        [--models m1,m2] [--key KEY ...] [--ready-file PATH] [--verbose]
        [--tls-cert CERT.pem --tls-key KEY.pem]

With --tls-cert and --tls-key it speaks HTTPS with that certificate (a client
that refuses the certificate never gets as far as sending a request, so nothing
is recorded).

Routes match on the path SUFFIX, so any base-URL prefix works
(`/v1/chat/completions`, `/openai/v1/chat/completions`, ...):

    GET  .../models            model list (auth checked, recorded)
    POST .../chat/completions  OpenAI chat completion, streaming or not
    POST .../messages          Anthropic Messages API, streaming or not

Control endpoints (never auth-checked, never recorded):

    POST /_control/behavior  JSON behaviour (see DEFAULT_DOC below)
    GET  /_control/behavior  current behaviour
    POST /_control/reset     clear recorded requests, default behaviour
    GET  /_control/requests  recorded requests (metadata, no full bodies)
    POST /_control/models    {"models": [...]} replaces the model list
    POST /_control/keys      {"keys": [...]} replaces accepted keys ([] = no auth)

Behaviour keys (all optional): status, retry_after, fail_every, fail_times,
first_byte_delay, event_delay, events, event_bytes (pad each streamed event's
content to about this many bytes), abort_after_events (close the connection
after this many events, without [DONE]; 0: right after the headers),
error_body, context_length_error, echo_headers, per_model {model: {...}},
rate_limit {requests, window} (a provider's request window of `window` seconds,
starting with its first request: answers carry x-ratelimit-limit-requests,
-remaining-requests and -reset-requests as OpenAI sends them, and a request
past the limit gets 429 with retry-after; `headers: false` leaves the headers
out), credits {total_credits, total_usage} (what GET /credits answers, as
OpenRouter's does; default 10 and 0). `fail_every`/`fail_times` without
`status` fail with 500; if both are set `fail_times` wins. Failures and
`first_byte_delay` apply to chat completions and messages requests.
"""
import argparse
import hashlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTEXT_LENGTH_MSG = ("This model's maximum context length is 4096 tokens. "
                      "However, your messages resulted in 9000 tokens.")


class State:
    """Mutable server state shared by all handler threads (guarded by lock)."""

    def __init__(self, name, models, keys):
        self.lock = threading.Lock()
        self.name = name
        self.models = list(models)
        self.keys = list(keys)
        self.requests = []
        self.behavior = {}
        self.counters = {}  # behaviour key -> chat requests since behaviour set
        self.next_id = 0
        self.window = None  # [start, count] of the rate_limit window

    def set_behavior(self, behavior):
        with self.lock:
            self.behavior = behavior
            self.counters = {}
            self.window = None

    def take_window(self, limit):
        """Count one request in the rate-limit window: (allowed, remaining, reset seconds)."""
        with self.lock:
            now = time.monotonic()
            length = float(limit.get("window", 60))
            if self.window is None or now >= self.window[0] + length:
                self.window = [now, 0]
            reset = self.window[0] + length - now
            if self.window[1] >= int(limit["requests"]):
                return False, 0, reset
            self.window[1] += 1
            return True, int(limit["requests"]) - self.window[1], reset

    def reset(self):
        with self.lock:
            self.requests = []
            self.behavior = {}
            self.counters = {}

    def effective(self, model):
        """Behaviour for one chat request: top level overridden by per_model,
        plus this request's 1-based sequence number for that behaviour."""
        with self.lock:
            per_model = self.behavior.get("per_model") or {}
            eff = {k: v for k, v in self.behavior.items() if k != "per_model"}
            key = "*"
            if isinstance(model, str) and model in per_model:
                eff.update(per_model[model])
                key = "model:" + model
            self.counters[key] = self.counters.get(key, 0) + 1
            self.next_id += 1
            return eff, self.counters[key], self.next_id


def openai_error(message, etype, code):
    return {"error": {"message": message, "type": etype, "code": code}}


def should_fail(beh, seq):
    """HTTP status to fail with for request number `seq`, or None."""
    status = beh.get("status")
    fail_times, fail_every = beh.get("fail_times"), beh.get("fail_every")
    if status is None and (fail_times is not None or fail_every):
        status = 500
    if status is None or int(status) < 400:
        return None
    if fail_times is not None:
        return int(status) if seq <= int(fail_times) else None
    if fail_every:
        return int(status) if seq % int(fail_every) == 0 else None
    return int(status)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeProvider/1.0"
    state: State = None  # set in main()
    verbose = False

    def setup(self):
        super().setup()
        # Disable Nagle so each SSE event leaves the socket immediately.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("[%s] %s\n" % (self.state.name, fmt % args))

    # ---------------------------------------------------------------- I/O

    def read_body(self):
        """Read the full request body (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk data
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    extra_headers = {}

    def send_bytes(self, status, body, ctype="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Fake-Provider", self.state.name)
        for k, v in {**self.extra_headers, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status, obj, headers=None):
        self.send_bytes(status, json.dumps(obj).encode(), headers=headers)

    def start_stream(self):
        """Send SSE headers; chunked encoding unless the client is HTTP/1.0."""
        self.chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Fake-Provider", self.state.name)
        for k, v in self.extra_headers.items():
            self.send_header(k, v)
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()

    def write_event(self, text):
        data = text.encode()
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.wfile.write(data)
        self.wfile.flush()

    def abort(self):
        """Close the connection mid-answer, as a provider that crashed would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def end_stream(self):
        if self.chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    # ------------------------------------------------------------ routing

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        self.extra_headers = {}  # one connection carries many requests
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return self.send_json(400, openai_error("bad request body", "invalid_request_error", None))
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path.startswith("/_control/"):
                return self.control(method, path[len("/_control/"):], body)
            self.serve_api(method, path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client went away mid-answer

    def control(self, method, what, body):
        st = self.state
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return self.send_json(400, {"ok": False, "error": "invalid JSON"})
        if method == "GET" and what == "requests":
            with st.lock:
                return self.send_json(200, list(st.requests))
        if method == "GET" and what == "behavior":
            with st.lock:
                return self.send_json(200, st.behavior)
        if method == "POST" and what == "behavior" and isinstance(data, dict):
            st.set_behavior(data)
        elif method == "POST" and what == "reset":
            st.reset()
        elif method == "POST" and what == "models" and isinstance(data, dict):
            with st.lock:
                st.models = [str(m) for m in data.get("models", [])]
        elif method == "POST" and what == "keys" and isinstance(data, dict):
            with st.lock:
                st.keys = [str(k) for k in data.get("keys", [])]
        else:
            return self.send_json(404, {"ok": False, "error": "unknown control endpoint"})
        self.send_json(200, {"ok": True})

    def record(self, method, body, parsed, json_ok):
        """Store request metadata (never the full body) and return the entry."""
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        model = parsed.get("model") if isinstance(parsed, dict) else None
        entry = {
            "method": method,
            "path": self.path,
            "headers": headers,
            "body_len": len(body),
            "model": model if isinstance(model, str) else None,
            "stream": bool(isinstance(parsed, dict) and parsed.get("stream") is True),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "json_ok": json_ok,
            "body_head": body[:8000].decode("utf-8", errors="replace")[:2000],
            "ts": time.time(),
            "status": None,  # filled in once the answer status is known
        }
        with self.state.lock:
            self.state.requests.append(entry)
        return entry

    def authorized(self):
        with self.state.lock:
            keys = list(self.state.keys)
        if not keys:
            return True
        auth = self.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return bearer in keys or self.headers.get("x-api-key") in keys

    def serve_api(self, method, path, body):
        st = self.state
        parsed, json_ok = None, False
        if body:
            try:
                parsed, json_ok = json.loads(body), True
            except ValueError:
                pass
        kind = None
        if method == "GET" and path.endswith("/models"):
            kind = "models"
        elif method == "GET" and path.endswith("/credits"):
            kind = "credits"
        elif method == "POST" and path.endswith("/chat/completions"):
            kind = "chat"
        elif method == "POST" and path.endswith("/messages"):
            kind = "messages"
        entry = self.record(method, body, parsed, json_ok)
        if kind is None:
            entry["status"] = 404
            return self.send_json(404, openai_error(
                "Unknown path %s %s" % (method, path), "invalid_request_error", "not_found"))
        if not self.authorized():
            entry["status"] = 401
            return self.send_json(401, openai_error(
                "Incorrect API key provided", "invalid_request_error", "invalid_api_key"))
        if kind == "credits":
            entry["status"] = 200
            with st.lock:
                credits = dict(st.behavior.get("credits") or {"total_credits": 10, "total_usage": 0})
            return self.send_json(200, {"data": credits})
        if kind == "models":
            entry["status"] = 200
            with st.lock:
                data = [{"id": m, "object": "model", "created": 0, "owned_by": st.name}
                        for m in st.models]
            return self.send_json(200, {"object": "list", "data": data})
        if not json_ok or not isinstance(parsed, dict):
            entry["status"] = 400
            return self.send_json(400, openai_error(
                "We could not parse the JSON body of your request.",
                "invalid_request_error", None))
        beh, seq, rid = st.effective(parsed.get("model"))
        if beh.get("first_byte_delay"):
            time.sleep(float(beh["first_byte_delay"]))
        status = should_fail(beh, seq)
        if status is not None:
            entry["status"] = status
            return self.send_failure(kind, status, beh)
        limit = beh.get("rate_limit")
        if limit:
            allowed, remaining, reset = st.take_window(limit)
            if limit.get("headers", True):
                self.extra_headers = {"x-ratelimit-limit-requests": str(limit["requests"]),
                                      "x-ratelimit-remaining-requests": str(remaining),
                                      "x-ratelimit-reset-requests": "%.3fs" % reset}
            if not allowed:
                entry["status"] = 429
                return self.send_failure(kind, 429, {**beh, "retry_after": max(1, int(reset + 0.999))})
        if beh.get("context_length_error"):
            entry["status"] = 400
            return self.send_json(400, openai_error(
                CONTEXT_LENGTH_MSG, "invalid_request_error", "context_length_exceeded"))
        entry["status"] = 200
        if kind == "chat":
            return self.answer_chat(parsed, body, beh, rid)
        return self.answer_messages(parsed, body, beh, rid)

    def send_failure(self, kind, status, beh):
        name = self.state.name
        headers = {}
        if beh.get("retry_after") is not None:
            ra = beh["retry_after"]
            headers["Retry-After"] = str(int(ra)) if float(ra) == int(ra) else str(ra)
        if beh.get("error_body") is not None:
            raw = str(beh["error_body"])
            try:
                json.loads(raw)
                ctype = "application/json"
            except ValueError:
                ctype = "text/plain; charset=utf-8"
            return self.send_bytes(status, raw.encode(), ctype, headers)
        msg = "fake error %d from %s" % (status, name)
        if kind == "messages":  # Anthropic error shape
            etype = "rate_limit_error" if status == 429 else "api_error"
            return self.send_json(status, {"type": "error",
                                           "error": {"type": etype, "message": msg}}, headers)
        etype = "rate_limit_exceeded" if status == 429 else "fake_error"
        self.send_json(status, openai_error(msg, etype, status), headers)

    # ------------------------------------------------------------ answers

    def answer_chat(self, req, body, beh, rid):
        name, model = self.state.name, req.get("model")
        cid = "chatcmpl-fake-%d" % rid
        prompt_tokens = max(1, len(body) // 4)
        echo = dict(self.headers.items()) if beh.get("echo_headers") else None
        if req.get("stream") is not True:
            resp = {
                "id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hello from " + name}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 4,
                          "total_tokens": prompt_tokens + 4},
                "provider": name,
            }
            if echo is not None:
                resp["received_headers"] = echo
            return self.send_json(200, resp)
        events = int(beh.get("events", 5))
        delay = float(beh.get("event_delay", 0.05))
        pad = "x" * max(0, int(beh.get("event_bytes", 0)) - 200)
        abort_after = beh.get("abort_after_events")
        created = int(time.time())
        self.start_stream()
        for i in range(events):
            if abort_after is not None and i >= int(abort_after):
                return self.abort()
            if i and delay:
                time.sleep(delay)
            last = i == events - 1
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "provider": name, "ts": time.time(),
                     "choices": [{"index": 0, "delta": {"content": "tok%d %s" % (i, pad)},
                                  "finish_reason": "stop" if last else None}]}
            if i == 0 and echo is not None:
                chunk["received_headers"] = echo
            self.write_event("data: %s\n\n" % json.dumps(chunk))
        if (req.get("stream_options") or {}).get("include_usage"):
            usage = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "provider": name, "ts": time.time(), "choices": [],
                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": events,
                               "total_tokens": prompt_tokens + events}}
            self.write_event("data: %s\n\n" % json.dumps(usage))
        self.write_event("data: [DONE]\n\n")
        self.end_stream()

    def answer_messages(self, req, body, beh, rid):
        name, model = self.state.name, req.get("model")
        input_tokens = max(1, len(body) // 4)
        if req.get("stream") is not True:
            return self.send_json(200, {
                "id": "msg_%d" % rid, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "hello from " + name}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 4}})
        events = int(beh.get("events", 5))
        delay = float(beh.get("event_delay", 0.05))
        self.start_stream()

        def emit(etype, data):
            data = dict(type=etype, **data, ts=time.time())
            self.write_event("event: %s\ndata: %s\n\n" % (etype, json.dumps(data)))

        emit("message_start", {"message": {
            "id": "msg_%d" % rid, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})
        emit("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for i in range(events):
            time.sleep(delay)
            emit("content_block_delta", {"index": 0,
                                         "delta": {"type": "text_delta", "text": "tok%d " % i}})
        emit("content_block_stop", {"index": 0})
        emit("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": events}})
        emit("message_stop", {})
        self.end_stream()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that refused our certificate (the TLS tests' point) is not news.
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake OpenAI-compatible LLM provider")
    ap.add_argument("--port", type=int, required=True, help="0 = ephemeral")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="fake")
    ap.add_argument("--models", default="fake-model", help="comma-separated")
    ap.add_argument("--key", action="append", default=[], help="accepted API key (repeatable)")
    ap.add_argument("--ready-file", help="write the bound port here once listening")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = ap.parse_args(argv)

    Handler.state = State(args.name, [m for m in args.models.split(",") if m], args.key)
    Handler.verbose = args.verbose
    server = Server((args.host, args.port), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    port = server.server_address[1]

    def stop(signum, frame):
        # shutdown() blocks until serve_forever() returns, so call it off-thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.ready_file:
        tmp = "%s.tmp.%d" % (args.ready_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.ready_file)
    print("LISTENING %d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
