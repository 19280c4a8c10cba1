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
    /// A record id: the recording process's random prefix and its count, in
    /// the form `0123456789abcdef-42`.
    pub fn id_for(prefix: u64, n: u64) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(40);
        for shift in (0..16).rev() {
            id.push(char::from(HEX[((prefix >> (shift * 4)) & 0xf) as usize]));
        }
        id.push('-');
        id.push_str(itoa::Buffer::new().format(n));
        id
    }

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

    /// The record as one delivery line (without its `\n`): fields separated by
    /// tabs, a tab, newline or backslash in a text escaped, an absent value
    /// empty. Written by hand rather than as JSON: every request makes one, and
    /// serde's JSON took six times as long.
    pub fn encode_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(LINE_TAG.as_bytes());
        let mut n = itoa::Buffer::new();
        let text = |out: &mut Vec<u8>, t: Option<&str>| {
            out.push(b'\t');
            let t = t.unwrap_or_default().as_bytes();
            if memchr::memchr3(b'\t', b'\n', b'\\', t).is_none() {
                out.extend_from_slice(t);
                return;
            }
            for &b in t {
                match b {
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    _ => out.push(b),
                }
            }
        };
        text(out, Some(&self.id));
        let mut num = |out: &mut Vec<u8>, v: Option<u64>| {
            out.push(b'\t');
            if let Some(v) = v {
                out.extend_from_slice(n.format(v).as_bytes());
            }
        };
        num(out, Some(self.ts_ms));
        for t in [&self.client, &self.model_requested, &self.model_used, &self.channel, &self.provider] {
            text(out, t.as_deref());
        }
        num(out, Some(u64::from(self.stream)));
        num(out, Some(u64::from(self.status)));
        num(out, Some(u64::from(self.attempts)));
        for v in [
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        ] {
            num(out, Some(v));
        }
        num(out, self.cost_pico);
        num(out, Some(self.latency_ms));
        num(out, self.ttft_ms);
        num(out, Some(u64::from(self.usage_estimated)));
        text(out, self.error.as_deref());
    }

    /// A line [`Record::encode_line`] wrote (or the record as one JSON object).
    /// An empty text field reads back as absent.
    pub fn decode_line(line: &[u8]) -> Option<Self> {
        if line.first() == Some(&b'{') {
            return serde_json::from_slice(line).ok();
        }
        let line = std::str::from_utf8(line).ok()?;
        let fields: Vec<&str> = line.split('\t').collect();
        let [tag, id, rest @ ..] = fields.as_slice() else {
            return None;
        };
        if *tag != LINE_TAG || id.is_empty() || rest.len() != 19 {
            return None;
        }
        let opt = |i: usize| -> Option<Option<u64>> {
            match rest[i] {
                "" => Some(None),
                v => v.parse().ok().map(Some),
            }
        };
        let req = |i: usize| opt(i)?;
        let text = |i: usize| -> Option<Option<String>> {
            match rest[i] {
                "" => Some(None),
                raw => unescape(raw).map(Some),
            }
        };
        Some(Record {
            id: unescape(id)?,
            ts_ms: req(0)?,
            client: text(1)?,
            model_requested: text(2)?,
            model_used: text(3)?,
            channel: text(4)?,
            provider: text(5)?,
            stream: req(6)? != 0,
            status: u16::try_from(req(7)?).ok()?,
            attempts: u32::try_from(req(8)?).ok()?,
            prompt_tokens: req(9)?,
            completion_tokens: req(10)?,
            cached_tokens: req(11)?,
            cache_write_tokens: req(12)?,
            reasoning_tokens: req(13)?,
            cost_pico: opt(14)?,
            latency_ms: req(15)?,
            ttft_ms: opt(16)?,
            usage_estimated: req(17)? != 0,
            error: text(18)?,
        })
    }
}

/// First field of a delivery line; bumped when the fields change.
const LINE_TAG: &str = "sarr1";

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            '\\' => '\\',
            _ => return None,
        });
    }
    Some(out)
}

/// Records from a delivery body, one a line. Lines that are not records are
/// counted, not fatal.
pub fn parse_lines(body: &[u8]) -> (Vec<Record>, usize) {
    let mut bad = 0;
    let records = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| match Record::decode_line(l) {
            Some(r) => Some(r),
            None => {
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
    fn ids_are_prefix_and_count() {
        assert_eq!(Record::id_for(0xab, 42), "00000000000000ab-42");
        assert_eq!(Record::id_for(u64::MAX, 0), format!("{:016x}-0", u64::MAX));
    }

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
        let mut line = Vec::new();
        r.encode_line(&mut line);
        let json = serde_json::to_string(&r).unwrap();
        let body = format!("{}\n\nnot a record\n{json}\n", String::from_utf8(line).unwrap());
        let (records, bad) = parse_lines(body.as_bytes());
        assert_eq!(records, vec![r.clone(), r.clone()]);
        assert_eq!(bad, 1);
        // Text with tabs, newlines and backslashes, and absent values.
        let odd = Record {
            model_requested: Some("a\tb\nc\\d\re \u{4e2d}".into()),
            channel: None,
            cost_pico: None,
            ttft_ms: None,
            error: Some("x".into()),
            ..r
        };
        let mut line = Vec::new();
        odd.encode_line(&mut line);
        assert!(!line.contains(&b'\n'));
        assert_eq!(Record::decode_line(&line), Some(odd));
        for bad in [&b"sarr1\tid"[..], b"sarr2\t", b"", b"sarr1\t\t1"] {
            assert_eq!(Record::decode_line(bad), None);
        }
    }
}
