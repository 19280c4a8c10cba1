//! A tiny HTTP/1.1 client for the control plane, which listens on a local address
//! (127.0.0.1:7602 by default). One request per connection (`connection: close`),
//! bounded by timeouts, so a stalled control plane can delay the background thread
//! but never a request: requests only read what this thread stored.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::state::ControlPlane;

const TIMEOUT: Duration = Duration::from_secs(5);
/// A table for 100,000 models is a few tens of MB; refuse anything absurd.
const MAX_RESPONSE: u64 = 512 * 1024 * 1024;

/// `GET path` with `if-none-match: etag`: the status and body.
pub fn get(cp: &ControlPlane, path: &str, etag: &str) -> Result<(u16, Vec<u8>), String> {
    let extra = if etag.is_empty() { String::new() } else { format!("if-none-match: {etag}\r\n") };
    exchange(cp, &format!("GET {path} HTTP/1.1\r\n{extra}"), &[])
}

/// `POST path` with a text body: the status.
pub fn post(cp: &ControlPlane, path: &str, body: &[u8]) -> Result<u16, String> {
    let head = format!("POST {path} HTTP/1.1\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n", body.len());
    exchange(cp, &head, body).map(|(s, _)| s)
}

fn exchange(cp: &ControlPlane, head: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let addr = cp
        .address
        .to_socket_addrs()
        .map_err(|e| format!("control plane address {}: {e}", cp.address))?
        .next()
        .ok_or_else(|| format!("control plane address {} resolves to nothing", cp.address))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("control plane unreachable: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let request =
        format!("{head}host: {}\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n", cp.address, cp.token);
    stream.write_all(request.as_bytes()).map_err(|e| format!("control plane write: {e}"))?;
    stream.write_all(body).map_err(|e| format!("control plane write: {e}"))?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(|e| format!("control plane read: {e}"))?;
    parse_response(&raw)
}

/// Status and body of a whole HTTP/1.1 response (content-length, chunked, or until close).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let bad = || "control plane sent a malformed HTTP response".to_string();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        return dechunk(rest).map(|b| (status, b)).ok_or_else(bad);
    }
    let body = match length {
        Some(n) if n <= rest.len() => rest[..n].to_vec(),
        Some(_) => return Err("control plane response was cut short".into()),
        None => rest.to_vec(),
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hello"[..]));
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hello"[..]));
        let (s, b) = parse_response(b"HTTP/1.1 304 Not Modified\r\n\r\n").unwrap();
        assert_eq!((s, b.len()), (304, 0));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhi").is_err());
    }
}
