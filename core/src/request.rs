//! The few fields of a chat request the router reads.
//!
//! One parse of the body: serde validates the whole document while borrowing the
//! raw `model` value, whose byte range tells the per-attempt filter where to splice
//! a channel's own model name without touching (or re-serialising) the rest.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ascii_safe, RouterError};

/// What the router needs from a chat completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatHead {
    pub model: String,
    pub stream: bool,
    /// Byte range of the `model` value (the JSON string, quotes included).
    pub model_span: (usize, usize),
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
}

pub fn parse_chat_head(body: &[u8]) -> Result<ChatHead, RouterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RouterError::bad_request("invalid_json", "request body is empty; expected a JSON object"));
    }
    let head: Head = serde_json::from_slice(body).map_err(|e| {
        RouterError::bad_request("invalid_json", format!("request body is not a valid JSON object: {e}"))
    })?;
    let raw =
        head.model.ok_or_else(|| RouterError::bad_request("missing_model", "request body has no \"model\" field"))?;
    let model: String = serde_json::from_str(raw.get())
        .map_err(|_| RouterError::bad_request("invalid_model", "\"model\" must be a string"))?;
    if model.trim().is_empty() {
        return Err(RouterError::bad_request("missing_model", "\"model\" is empty"));
    }
    if model.len() > 512 {
        return Err(RouterError::bad_request(
            "invalid_model",
            format!("\"model\" is too long ({} bytes): {}", model.len(), ascii_safe(&model, 64)),
        ));
    }
    // The raw value borrows from `body`, so its address gives its offset.
    let start = (raw.get().as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    let end = start + raw.get().len();
    Ok(ChatHead { model, stream: head.stream.unwrap_or(false), model_span: (start, end) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_stream_and_span() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}], "model" :  "gpt-4o",
            "stream": true}"#;
        let h = parse_chat_head(body).unwrap();
        assert_eq!(h.model, "gpt-4o");
        assert!(h.stream);
        assert_eq!(&body[h.model_span.0..h.model_span.1], br#""gpt-4o""#);
    }

    #[test]
    fn escaped_model_names_decode() {
        let body = br#"{"model":"qwen\/qwen3:free"}"#;
        let h = parse_chat_head(body).unwrap();
        assert_eq!(h.model, "qwen/qwen3:free");
        assert_eq!(&body[h.model_span.0..h.model_span.1], br#""qwen\/qwen3:free""#);
        assert!(!h.stream);
    }

    #[test]
    fn bad_inputs_are_400() {
        for (body, code) in [
            (&b""[..], "invalid_json"),
            (b"{", "invalid_json"),
            (b"[1,2]", "invalid_json"),
            (b"{\"messages\":[]}", "missing_model"),
            (b"{\"model\":5}", "invalid_model"),
            (b"{\"model\":\"  \"}", "missing_model"),
            (b"{\"model\":\"a\",\"model\":\"b\"}", "invalid_json"),
            (b"{\"model\":\"a\",\"stream\":\"yes\"}", "invalid_json"),
            (b"{\"model\":\"a\"} trailing", "invalid_json"),
            (b"\xff\xfe", "invalid_json"),
        ] {
            let e = parse_chat_head(body).unwrap_err();
            assert_eq!(e.status, 400, "{body:?}");
            assert_eq!(e.code, code, "{body:?}");
        }
    }

    #[test]
    fn null_stream_is_false() {
        assert!(!parse_chat_head(br#"{"model":"m","stream":null}"#).unwrap().stream);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Random and mutated bodies: every one is answered with Ok or a 400, never a panic.
    #[test]
    fn never_panics_on_random_or_mutated_bodies() {
        let mut rng = crate::testrng::Rng(0x853c_49e6_748f_ea9b);
        let mut next = move || rng.next();
        let seed = br#"{"model":"qwen/qwen3:free","stream":true,"messages":[{"role":"user","content":"h\u00e9"}]}"#;
        for i in 0..20_000 {
            let body: Vec<u8> = if i % 2 == 0 {
                (0..(next() % 64)).map(|_| (next() % 256) as u8).collect()
            } else {
                let mut b = seed.to_vec();
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[at] = (next() % 256) as u8,
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, b"{}[]\",:\\"[(next() % 8) as usize]),
                    }
                }
                b
            };
            match parse_chat_head(&body) {
                Ok(h) => assert!(h.model_span.1 <= body.len() && h.model_span.0 < h.model_span.1),
                Err(e) => assert_eq!(e.status, 400),
            }
        }
    }
}
