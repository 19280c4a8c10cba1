//! Errors a client sees, in OpenAI's shape: `{"error":{"message","type","code"}}`.

use serde::Serialize;

/// An error the router answers itself. `message` must never contain a provider key:
/// it is built only from what the client sent and from channel ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before sending again (`retry-after`).
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
}

impl RouterError {
    pub fn new(status: u16, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code, message: message.into(), retry_after_s: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message)
    }

    pub fn model_not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", "model_not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "invalid_request_error", "invalid_api_key", message)
    }

    /// A client token that may not use what it asked for (OpenAI's
    /// `permission_error` shape).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", "model_not_allowed", message)
    }

    /// A client token is over its rate limit until `retry_after_s` has passed.
    pub fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        Self { retry_after_s: Some(retry_after_s), ..Self::new(429, "requests", "rate_limit_exceeded", message) }
    }

    /// A budget is spent and this request could only be served by paying.
    pub fn budget_exceeded(message: impl Into<String>) -> Self {
        Self::new(429, "insufficient_quota", "budget_exceeded", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("request body is larger than the router's limit of {limit} bytes"),
        )
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(503, "service_unavailable", code, message)
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(404, "invalid_request_error", "unknown_url", format!("unknown endpoint {}", ascii_safe(path, 200)))
    }

    /// The JSON body. Serialising plain strings cannot fail, but if it ever did the
    /// caller still gets a valid error body rather than a panic.
    pub fn to_json(&self) -> String {
        let body = Body { error: Inner { message: &self.message, kind: self.kind, code: self.code } };
        serde_json::to_string(&body).unwrap_or_else(|_| {
            r#"{"error":{"message":"internal error","type":"server_error","code":"internal_error"}}"#.to_string()
        })
    }
}

/// Client-supplied text quoted back in a message: printable ASCII only, bounded, so
/// an error can also be carried in a header and cannot grow without limit.
pub fn ascii_safe(s: &str, max: usize) -> String {
    // Debug headers call this per response; most values are plain already.
    if s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// `body` with every occurrence of `secret` masked in place (its first three
/// bytes kept, the rest `*`, so the length and the JSON around it stay valid);
/// `None` when it does not occur. For provider error bodies, which some
/// providers fill with the key they were sent.
pub fn mask_secret(body: &[u8], secret: &str) -> Option<Vec<u8>> {
    let secret = secret.as_bytes();
    if secret.len() < 6 || body.len() < secret.len() {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i + secret.len() <= body.len() {
        if body.get(i..i + secret.len()) == Some(secret) {
            let buf = out.get_or_insert_with(|| body.to_vec());
            if let Some(hidden) = buf.get_mut(i + 3..i + secret.len()) {
                hidden.fill(b'*');
            }
            i += secret.len();
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_is_openai_shaped() {
        let e = RouterError::model_not_found("model \"x\" not found");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "model \"x\" not found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
    }

    #[test]
    fn secrets_are_masked_in_place() {
        let body = br#"{"error":{"message":"bad key sk-abcdef123 and sk-abcdef123"}}"#;
        let masked = mask_secret(body, "sk-abcdef123").unwrap();
        assert_eq!(masked.len(), body.len());
        assert_eq!(masked, br#"{"error":{"message":"bad key sk-********* and sk-*********"}}"#.to_vec());
        assert_eq!(mask_secret(b"nothing here", "sk-abcdef123"), None);
        assert_eq!(mask_secret(b"short k", "k"), None, "too short to tell from text");
    }

    #[test]
    fn ascii_safe_bounds_and_cleans() {
        assert_eq!(ascii_safe("abc\u{7f}d\u{4e2d}", 10), "abc?d?");
        assert_eq!(ascii_safe("abcdef", 3), "abc...");
    }
}
