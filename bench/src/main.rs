//! `sar-bench upstream --port P [--stream-events N --event-delay-ms D]`
//!     A fast fake OpenAI upstream: a fixed chat completion (or SSE stream) for any
//!     POST, a model list for GET .../models. Fast enough that it is never the
//!     bottleneck. `--fail-status S` makes every chat answer that status.
//! `sar-bench resolve`
//!     Table build time and model resolution percentiles on synthetic tables.
//! `sar-bench load --url URL --concurrency C --duration-ms D [--body FILE] [--header K:V] [--first-event]`
//!     Keep-alive HTTP/1.1 load from C connections; prints one JSON line with the
//!     request count, errors, requests/s and latency percentiles (ms). With
//!     `--first-event`, latency is time to the first body bytes (streaming).

mod resolve;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const CHAT: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"hello from the bench upstream"},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":8,"total_tokens":258}}"#;
const MODELS: &str = r#"{"object":"list","data":[{"id":"bench-model","object":"model"}]}"#;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct UpstreamOpts {
    stream_events: usize,
    event_delay: Duration,
    fail_status: Option<u16>,
}

fn full(s: &'static str) -> Body {
    Full::new(Bytes::from_static(s.as_bytes())).boxed()
}

async fn upstream_handle(req: Request<Incoming>, opts: Arc<UpstreamOpts>) -> Result<Response<Body>, Infallible> {
    let is_models = req.uri().path().ends_with("/models");
    let wants_stream = req.method() == hyper::Method::POST && opts.stream_events > 0;
    // Drain the request body so the connection can be reused.
    let _ = req.into_body().collect().await;
    let mut resp = if is_models {
        Response::new(full(MODELS))
    } else if let Some(status) = opts.fail_status {
        let mut r =
            Response::new(full(r#"{"error":{"message":"bench failure","type":"server_error","code":"bench"}}"#));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
        r
    } else if wants_stream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let events = opts.stream_events;
        let delay = opts.event_delay;
        tokio::spawn(async move {
            for i in 0..events {
                let chunk = format!(
                    "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}}}}]}}\n\n"
                );
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
            }
            let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        });
        let mut r = Response::new(ChannelBody(rx).boxed());
        r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/event-stream"));
        return Ok(r);
    } else {
        Response::new(full(CHAT))
    };
    resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// A response body fed by a channel: each message is one frame, sent as it comes.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

async fn upstream(port: u16, opts: UpstreamOpts) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("LISTENING {}", addr.port());
    let opts = Arc::new(opts);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let opts = opts.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| upstream_handle(req, opts.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

struct LoadOpts {
    addr: SocketAddr,
    authority: String,
    path: String,
    body: Bytes,
    headers: Vec<(String, String)>,
    concurrency: usize,
    duration: Duration,
    first_event: bool,
}

/// One connection's loop: send, wait for the response (or its first bytes), repeat.
async fn worker(opts: Arc<LoadOpts>, deadline: Instant) -> (Vec<u32>, u64) {
    let mut latencies_us = Vec::new();
    let mut errors = 0u64;
    'reconnect: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(opts.addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let mut builder = Request::builder()
                .method(if opts.body.is_empty() { "GET" } else { "POST" })
                .uri(opts.path.as_str())
                .header("host", opts.authority.as_str())
                .header("content-type", "application/json");
            for (k, v) in &opts.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let Ok(req) = builder.body(Full::new(opts.body.clone())) else {
                errors += 1;
                return (latencies_us, errors);
            };
            let start = Instant::now();
            let Ok(resp) = sender.send_request(req).await else {
                errors += 1;
                continue 'reconnect;
            };
            let ok = resp.status().is_success();
            let mut body = resp.into_body();
            let mut first = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) if f.is_data() && first.is_none() => first = Some(start.elapsed()),
                    Ok(_) => {}
                    Err(_) => {
                        errors += 1;
                        continue 'reconnect;
                    }
                }
            }
            let total = start.elapsed();
            if !ok {
                errors += 1;
                continue;
            }
            let took = if opts.first_event { first.unwrap_or(total) } else { total };
            latencies_us.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }
    (latencies_us, errors)
}

async fn load(opts: LoadOpts) -> Result<(), String> {
    let opts = Arc::new(opts);
    let started = Instant::now();
    let deadline = started + opts.duration;
    let handles: Vec<_> = (0..opts.concurrency).map(|_| tokio::spawn(worker(opts.clone(), deadline))).collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.await.map_err(|e| e.to_string())?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[i.min(all.len() - 1)]) / 1000.0
    };
    let out = serde_json::json!({
        "requests": all.len(),
        "errors": errors,
        "seconds": elapsed,
        "rps": all.len() as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    });
    println!("{out}");
    Ok(())
}

fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.parse().map_err(|_| format!("{authority} is not ip:port"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().ok_or("usage: sar-bench upstream|load ...")?;
    let mut flags = std::collections::HashMap::new();
    let mut headers = Vec::new();
    let mut switches = std::collections::HashSet::new();
    while let Some(a) = args.next() {
        if a == "--first-event" {
            switches.insert(a);
            continue;
        }
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        if a == "--header" {
            let (k, val) = v.split_once(':').ok_or("--header K:V")?;
            headers.push((k.trim().to_string(), val.trim().to_string()));
        } else {
            flags.insert(a, v);
        }
    }
    let num = |k: &str, d: u64| -> Result<u64, String> {
        flags.get(k).map(|v| v.parse::<u64>().map_err(|_| format!("{k} needs a number"))).unwrap_or(Ok(d))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(num("--threads", 1)? as usize)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match cmd.as_str() {
        "resolve" => {
            println!("{}", resolve::run()?);
            Ok(())
        }
        "upstream" => {
            let opts = UpstreamOpts {
                stream_events: num("--stream-events", 0)? as usize,
                event_delay: Duration::from_millis(num("--event-delay-ms", 0)?),
                fail_status: flags.get("--fail-status").and_then(|s| s.parse().ok()),
            };
            rt.block_on(upstream(num("--port", 0)? as u16, opts))
        }
        "load" => {
            let (addr, authority, path) = parse_url(flags.get("--url").ok_or("--url is required")?)?;
            let body = match flags.get("--body") {
                Some(f) => Bytes::from(std::fs::read(f).map_err(|e| format!("{f}: {e}"))?),
                None => Bytes::new(),
            };
            let opts = LoadOpts {
                addr,
                authority,
                path,
                body,
                headers,
                concurrency: num("--concurrency", 1)?.max(1) as usize,
                duration: Duration::from_secs_f64(num("--duration-ms", 5000)? as f64 / 1000.0),
                first_event: switches.contains("--first-event"),
            };
            rt.block_on(load(opts))
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sar-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
