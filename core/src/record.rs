//! One usage record per chat request: what was asked, what answered, the tokens
//! and what they cost, how long it took, and how it ended. Envoy makes each
//! record when the request ends and hands it to the control plane, which keeps
//! it. `id` is unique per Envoy process and stable across retries of a delivery,
//! so the store keeps each record once however often it arrives.

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// When the request arrived (ms since the epoch).
    pub ts_ms: u64,
    /// The client token's id (never the token), when tokens are required.
    #[serde(default)]
    pub client: Option<String>,
    /// `model` as the client wrote it (none when the request ended before its body).
    #[serde(default)]
    pub model_requested: Option<String>,
    /// The model the answering channel was asked for.
    #[serde(default)]
    pub model_used: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    pub stream: bool,
    /// The status the client got.
    pub status: u16,
    /// Attempts sent to channels.
    pub attempts: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// Picodollars (1e-12 USD); `None` when the answering channel has no price.
    #[serde(default)]
    pub cost_pico: Option<u64>,
    pub latency_ms: u64,
    /// Time to the first response byte.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    /// The tokens are the router's estimate (the provider sent no usage).
    #[serde(default)]
    pub usage_estimated: bool,
    /// The error code the client got, or what cut the request short.
    #[serde(default)]
    pub error: Option<String>,
}

impl Record {
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
        }
    }

    pub fn set_usage(&mut self, u: &Usage) {
        self.prompt_tokens = u.prompt_tokens;
        self.completion_tokens = u.completion_tokens;
        self.cached_tokens = u.cached_tokens;
        self.cache_write_tokens = u.cache_write_tokens;
        self.reasoning_tokens = u.reasoning_tokens;
    }

    /// One JSON line (the delivery format: records separated by `\n`).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Records from a delivery body: one JSON object per line. Lines that are not
/// records are counted, not fatal.
pub fn parse_lines(body: &[u8]) -> (Vec<Record>, usize) {
    let mut bad = 0;
    let records = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| match serde_json::from_slice(l) {
            Ok(r) => Some(r),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (records, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_lines_are_counted() {
        let r = Record {
            id: "a-1".into(),
            ts_ms: 1,
            client: None,
            model_requested: Some("gpt-4o-mini".into()),
            model_used: Some("gpt-4o-mini".into()),
            channel: Some("c".into()),
            provider: Some("openai".into()),
            stream: true,
            status: 200,
            attempts: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_pico: Some(4_500_000),
            latency_ms: 12,
            ttft_ms: Some(3),
            usage_estimated: false,
            error: None,
        };
        let body = format!("{}\n\nnot json\n{}\n", r.to_line(), r.to_line());
        let (records, bad) = parse_lines(body.as_bytes());
        assert_eq!(records, vec![r.clone(), r]);
        assert_eq!(bad, 1);
    }
}
