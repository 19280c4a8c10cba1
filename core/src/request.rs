//! The few fields of a chat request the router reads.
//!
//! One pass over the body: it checks that the whole document is JSON (a client's
//! typo is answered here, not by a provider after a failover) and notes where the
//! top-level `model` and `stream` values are. `model`'s byte range tells the
//! per-attempt side where to splice a channel's own model name without touching
//! (or re-serialising) the rest.
//!
//! The scanner is written for this one job rather than borrowed from serde: a chat
//! body is mostly message text the router never reads, and skipping it 16 bytes at
//! a time costs a fraction of a general parser's work (see `make bench`).

use crate::error::{ascii_safe, RouterError};

/// What the router needs from a chat completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatHead {
    pub model: String,
    pub stream: bool,
    /// Byte range of the `model` value (the JSON string, quotes included).
    pub model_span: (usize, usize),
    /// Where the top-level object opens (the `{`).
    pub object_start: usize,
    /// Byte range of the `stream_options` value, if the client sent one.
    pub stream_options_span: Option<(usize, usize)>,
    /// The client asked for the usage event itself (`stream_options.include_usage: true`).
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`, when the client set a whole
    /// number (what budgets reserve for the answer).
    pub max_tokens: Option<u64>,
    /// The request offers tools (`tools` or `functions`).
    pub tools: bool,
}

/// Nesting deeper than this is refused (serde_json's own limit): the scanner
/// recurses once per level.
const MAX_DEPTH: usize = 128;

pub fn parse_chat_head(body: &[u8]) -> Result<ChatHead, RouterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RouterError::bad_request("invalid_json", "request body is empty; expected a JSON object"));
    }
    let invalid =
        |e: Syntax| RouterError::bad_request("invalid_json", format!("request body is not a valid JSON object: {e}"));
    let fields = top_level(body).map_err(invalid)?;
    let (start, end) =
        fields.model.ok_or_else(|| RouterError::bad_request("missing_model", "request body has no \"model\" field"))?;
    let model = decode_string(body.get(start..end).unwrap_or_default())
        .ok_or_else(|| RouterError::bad_request("invalid_model", "\"model\" must be a string"))?;
    if model.trim().is_empty() {
        return Err(RouterError::bad_request("missing_model", "\"model\" is empty"));
    }
    if model.len() > 512 {
        return Err(RouterError::bad_request(
            "invalid_model",
            format!("\"model\" is too long ({} bytes): {}", model.len(), ascii_safe(&model, 64)),
        ));
    }
    let include_usage = fields.stream_options.is_some_and(|(a, b)| {
        #[derive(serde::Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: bool,
        }
        // (Rare: only requests that set stream_options pay for this parse.)
        serde_json::from_slice::<StreamOptions>(body.get(a..b).unwrap_or_default()).is_ok_and(|o| o.include_usage)
    });
    Ok(ChatHead {
        model,
        stream: fields.stream,
        model_span: (start, end),
        object_start: fields.object_start,
        stream_options_span: fields.stream_options,
        include_usage,
        max_tokens: fields.max_completion_tokens.or(fields.max_tokens),
        tools: fields.tools,
    })
}

/// A syntax error: what was expected, at which byte.
#[derive(Debug, PartialEq)]
struct Syntax {
    what: &'static str,
    at: usize,
}

impl std::fmt::Display for Syntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected {} at byte {}", self.what, self.at)
    }
}

/// The top-level fields the router reads.
#[derive(Debug, Default)]
struct Fields {
    /// Byte range of `model`'s value, whatever its type.
    model: Option<(usize, usize)>,
    stream: bool,
    object_start: usize,
    stream_options: Option<(usize, usize)>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    tools: bool,
}

/// Scan the whole document, which must be one object, noting `model` and `stream`.
fn top_level(b: &[u8]) -> Result<Fields, Syntax> {
    let mut s = Scanner { b, i: 0 };
    let mut fields = Fields::default();
    let mut stream_seen = false;
    s.skip_ws();
    if s.peek() != Some(b'{') {
        return Err(Syntax { what: "a JSON object", at: s.i });
    }
    fields.object_start = s.i;
    s.container(0, b'}', &mut |(key_start, key_end), (value_start, value_end)| {
        let value = b.get(value_start..value_end).unwrap_or_default();
        match key_name(b.get(key_start..key_end).unwrap_or_default()) {
            Key::Model if fields.model.is_some() => Err(Syntax { what: "one \"model\" field", at: key_start }),
            Key::Model => {
                fields.model = Some((value_start, value_end));
                Ok(())
            }
            Key::Stream if stream_seen => Err(Syntax { what: "one \"stream\" field", at: key_start }),
            Key::Stream => {
                stream_seen = true;
                fields.stream = match value {
                    b"true" => true,
                    b"false" | b"null" => false,
                    _ => return Err(Syntax { what: "\"stream\" to be true, false or null", at: value_start }),
                };
                Ok(())
            }
            Key::StreamOptions if fields.stream_options.is_some() => {
                Err(Syntax { what: "one \"stream_options\" field", at: key_start })
            }
            Key::StreamOptions => {
                fields.stream_options = Some((value_start, value_end));
                Ok(())
            }
            // (The provider judges other values; a budget then reserves its default.)
            Key::MaxTokens => {
                fields.max_tokens = whole_number(value);
                Ok(())
            }
            Key::MaxCompletionTokens => {
                fields.max_completion_tokens = whole_number(value);
                Ok(())
            }
            Key::Tools => {
                fields.tools |= !matches!(value, b"null" | b"[]");
                Ok(())
            }
            Key::Other => Ok(()),
        }
    })?;
    s.skip_ws();
    if s.i != b.len() {
        return Err(Syntax { what: "the end of the document", at: s.i });
    }
    Ok(fields)
}

/// Called with each member's key span (quotes included) and value span.
type OnMember<'f> = dyn FnMut((usize, usize), (usize, usize)) -> Result<(), Syntax> + 'f;

enum Key {
    Model,
    Stream,
    StreamOptions,
    MaxTokens,
    MaxCompletionTokens,
    Tools,
    Other,
}

/// A JSON number that is a whole number of at most 12 digits.
fn whole_number(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Which field a key (a scanned JSON string, quotes included) names; a key
/// spelled with escapes is decoded first.
fn key_name(raw: &[u8]) -> Key {
    let name = match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => std::borrow::Cow::Borrowed(inner),
        _ => match decode_string(raw) {
            Some(s) => std::borrow::Cow::Owned(s.into_bytes()),
            None => return Key::Other,
        },
    };
    match &*name {
        b"model" => Key::Model,
        b"stream" => Key::Stream,
        b"stream_options" => Key::StreamOptions,
        b"max_tokens" => Key::MaxTokens,
        b"max_completion_tokens" => Key::MaxCompletionTokens,
        b"tools" | b"functions" => Key::Tools,
        _ => Key::Other,
    }
}

/// A JSON string value (quotes included) as text; `None` for any other value.
fn decode_string(raw: &[u8]) -> Option<String> {
    match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => std::str::from_utf8(inner).ok().map(str::to_string),
        [b'"', ..] => serde_json::from_slice(raw).ok(),
        _ => None,
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), Syntax> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Syntax { what, at: self.i })
        }
    }

    fn literal(&mut self, word: &'static [u8], what: &'static str) -> Result<(), Syntax> {
        if self.b.get(self.i..).is_some_and(|rest| rest.starts_with(word)) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Syntax { what, at: self.i })
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    /// One value starting at `i`; `depth` counts the containers around it.
    fn value(&mut self, depth: usize) -> Result<(), Syntax> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string()
            }
            Some(b'{') => self.container(depth, b'}', &mut |_, _| Ok(())),
            Some(b'[') => self.container(depth, b']', &mut |_, _| Ok(())),
            Some(b't') => self.literal(b"true", "a value"),
            Some(b'f') => self.literal(b"false", "a value"),
            Some(b'n') => self.literal(b"null", "a value"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Syntax { what: "a value", at: self.i }),
        }
    }

    /// An object (`close` is `}`) or an array (`]`) starting at `i`; `member`
    /// sees each of an object's members.
    fn container(&mut self, depth: usize, close: u8, member: &mut OnMember) -> Result<(), Syntax> {
        if depth + 1 >= MAX_DEPTH {
            return Err(Syntax { what: "less nesting", at: self.i });
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if close == b'}' {
                let key_start = self.i;
                self.expect(b'"', "a string key")?;
                self.string()?;
                let key = (key_start, self.i);
                self.skip_ws();
                self.expect(b':', "':'")?;
                self.skip_ws();
                let value_start = self.i;
                self.value(depth + 1)?;
                member(key, (value_start, self.i))?;
            } else {
                self.value(depth + 1)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Syntax { what: if close == b'}' { "',' or '}'" } else { "',' or ']'" }, at: self.i }),
            }
        }
    }

    /// The rest of a string whose opening quote is behind `i`: up to and past
    /// the closing quote. (Only strings may hold non-ASCII bytes, so this is
    /// where the document's UTF-8 is checked.)
    fn string(&mut self) -> Result<(), Syntax> {
        loop {
            self.i += plain_run(self.b.get(self.i..).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(Syntax { what: "four hex digits after \\u", at: self.i + 1 });
                            }
                            self.i += 5;
                        }
                        _ => return Err(Syntax { what: "a valid escape", at: self.i }),
                    }
                }
                Some(c) if c >= 0x80 => match utf8_char_len(self.b.get(self.i..).unwrap_or_default()) {
                    Some(n) => self.i += n,
                    None => return Err(Syntax { what: "valid UTF-8", at: self.i }),
                },
                Some(_) => return Err(Syntax { what: "no control characters in a string", at: self.i }),
                None => return Err(Syntax { what: "'\"' closing the string", at: self.i }),
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), Syntax> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Syntax { what: "a digit", at: self.i }),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Syntax> {
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(Syntax { what: "a digit", at: self.i });
        }
        self.digits();
        Ok(())
    }
}

/// The length of the UTF-8 character `b` starts with, if it is a valid one.
fn utf8_char_len(b: &[u8]) -> Option<usize> {
    let n = match b.first()? {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    // (std rejects overlong forms and surrogates.)
    std::str::from_utf8(b.get(..n)?).ok().map(|_| n)
}

/// How many leading bytes of `b` need no attention inside a JSON string: not a
/// quote, a backslash, a control character or a non-ASCII byte (whose UTF-8 the
/// caller checks). A message's text is most of a chat body, so this goes 16 bytes
/// per step where the CPU has SSE2 (every x86-64 does), else 8.
fn plain_run(b: &[u8]) -> usize {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        while let Some(chunk) = b.get(i..i + 16) {
            // SAFETY: SSE2 is part of x86-64; the unaligned load reads the 16 bytes
            // of `chunk`.
            let mask = unsafe {
                let x = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                // A signed compare: below 0x20 catches control characters and,
                // as negative numbers, every byte from 0x80.
                let special = _mm_or_si128(
                    _mm_or_si128(
                        _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8)),
                        _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8)),
                    ),
                    _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
                );
                _mm_movemask_epi8(special) as u32
            };
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` is zero: its high bit in the result (exact for the lowest
    // such byte; a borrow can mark bytes above it, which are never looked at).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            // Below 0x20 (subtracting 0x20 borrows into the high bit), or from 0x80.
            | ((x.wrapping_sub(ONES * 0x20) & !x) | x) & HIGH;
        if special != 0 {
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c) {
            break;
        }
        i += 1;
    }
    i
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
    fn reads_the_answer_limit_the_client_set() {
        let head = |b: &str| parse_chat_head(b.as_bytes()).unwrap().max_tokens;
        assert_eq!(head(r#"{"model":"m","max_tokens":256}"#), Some(256));
        assert_eq!(head(r#"{"model":"m","max_tokens":256,"max_completion_tokens":99}"#), Some(99));
        assert_eq!(head(r#"{"model":"m","max_tokens":1.5}"#), None);
        assert_eq!(head(r#"{"model":"m","max_tokens":"9"}"#), None);
        assert_eq!(head(r#"{"model":"m","max_tokens":99999999999999}"#), None);
        assert_eq!(head(r#"{"model":"m"}"#), None);
    }

    #[test]
    fn notes_stream_options_and_where_the_object_opens() {
        let body = br#"  {"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let h = parse_chat_head(body).unwrap();
        assert_eq!(h.object_start, 2);
        assert!(h.include_usage);
        let (a, b) = h.stream_options_span.unwrap();
        assert_eq!(&body[a..b], br#"{"include_usage":true}"#);
        for (body, asked) in [
            (&br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#[..], false),
            (br#"{"model":"m","stream":true,"stream_options":null}"#, false),
            (br#"{"model":"m","stream":true,"stream_options":{"other":1}}"#, false),
            (br#"{"model":"m","stream":true}"#, false),
        ] {
            assert_eq!(parse_chat_head(body).unwrap().include_usage, asked);
        }
        let twice = br#"{"model":"m","stream_options":{},"stream_options":{}}"#;
        assert_eq!(parse_chat_head(twice).unwrap_err().code, "invalid_json");
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

#[cfg(test)]
mod against_serde {
    use super::*;
    use serde_json::Value;

    /// The scanner agrees with serde_json on what is JSON, and reads the same
    /// `model` and `stream`, over random mutations of realistic bodies.
    #[test]
    fn agrees_with_serde_json() {
        let mut rng = crate::testrng::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let seeds: [&[u8]; 4] = [
            br#"{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"h\u00e9 \"q\" \\ \n"}],"temperature":0.7,"n":1,"stop":null,"x":[true,false,{},[]],"e":-1.5e+3}"#,
            br#" { "messages" : [ { "role" : "user" , "content" : [ {"type":"text","text":"hi"} ] } ] , "model" : "a\/b" , "stream" : true } "#,
            "{\"model\":\"qwen3:free\",\"messages\":[{\"role\":\"user\",\"content\":\"日本語 ✓ 😀\"}]}".as_bytes(),
            br#"{"model":"m","max_tokens":0,"top_p":1E-2,"logit_bias":{"50256":-100},"user":"\ud83d\ude00"}"#,
        ];
        for i in 0..40_000 {
            let mut b = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % b.len();
                match next() % 4 {
                    0 => b[at] = (next() % 128) as u8,
                    1 => {
                        b.remove(at);
                    }
                    2 => b.insert(at, b"{}[]\",:\\0-e.tfn \x01"[(next() % 17) as usize]),
                    _ => b[at] = (next() % 256) as u8,
                }
            }
            check(&b);
        }
    }

    fn check(b: &[u8]) {
        let mine = parse_chat_head(b);
        let theirs: Result<Value, _> = serde_json::from_slice(b);
        let Ok(v) = theirs else {
            // serde_json's `Value` refuses a UTF-16 surrogate (`\ud83d`) that is not
            // part of a pair; JSON's grammar allows it, and the router passes it on.
            let lower = String::from_utf8_lossy(b).to_ascii_lowercase();
            if ["\\ud8", "\\ud9", "\\uda", "\\udb", "\\udc", "\\udd", "\\ude", "\\udf"]
                .iter()
                .any(|p| lower.contains(p))
            {
                return;
            }
            let Err(e) = mine else {
                panic!("serde_json rejects {:?}: {theirs:?}", String::from_utf8_lossy(b));
            };
            assert_eq!(e.code, "invalid_json", "{:?}", String::from_utf8_lossy(b));
            return;
        };
        let obj = v.as_object();
        let twice = |key: &str| b.windows(key.len()).filter(|w| *w == key.as_bytes()).count() > 1;
        match mine {
            Ok(h) => {
                let obj = obj.expect("an object");
                assert_eq!(obj.get("model").and_then(Value::as_str), Some(h.model.as_str()));
                assert_eq!(obj.get("stream").and_then(Value::as_bool).unwrap_or(false), h.stream);
                let literal: String = serde_json::from_slice(&b[h.model_span.0..h.model_span.1]).unwrap();
                assert_eq!(literal, h.model);
            }
            Err(e) => {
                let fine_for_serde = obj.is_some_and(|o| {
                    o.get("model").and_then(Value::as_str).is_some_and(|m| !m.trim().is_empty() && m.len() <= 512)
                        && o.get("stream").is_none_or(|s| s.is_boolean() || s.is_null())
                });
                // serde_json's `Value` keeps the last of duplicate keys; the
                // router refuses a second `model` or `stream`.
                assert!(
                    !fine_for_serde || twice("\"model\"") || twice("\"stream\""),
                    "{e:?} for {:?}",
                    String::from_utf8_lossy(b)
                );
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut b = b"{\"model\":\"m\",\"x\":".to_vec();
        b.extend(std::iter::repeat_n(b'[', 100_000));
        let e = parse_chat_head(&b).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let mut ok = b"{\"model\":\"m\",\"x\":".to_vec();
        ok.extend(std::iter::repeat_n(b'[', 100));
        ok.extend(std::iter::repeat_n(b']', 100));
        ok.push(b'}');
        assert_eq!(parse_chat_head(&ok).unwrap().model, "m");
    }

    #[test]
    fn long_strings_with_specials_at_every_offset() {
        for at in 0..40 {
            let mut text = "x".repeat(40);
            text.replace_range(at..at + 1, "\"");
            let body = format!("{{\"model\":\"m\",\"c\":\"{text}\"}}");
            assert_eq!(parse_chat_head(body.as_bytes()).unwrap_err().code, "invalid_json", "{at}");
            let body = format!("{{\"c\":\"{}\\\"{}\",\"model\":\"m\"}}", &text[..at], &text[at + 1..]);
            assert_eq!(parse_chat_head(body.as_bytes()).unwrap().model, "m", "{at}");
            let body = format!("{{\"model\":\"m\",\"c\":\"{}\x1f{}\"}}", &text[..at], &text[at + 1..]);
            assert_eq!(parse_chat_head(body.as_bytes()).unwrap_err().code, "invalid_json", "{at}");
        }
    }

    #[test]
    fn escaped_keys_name_their_field() {
        let h = parse_chat_head(br#"{"mod\u0065l":"m","str\u0065am":true}"#).unwrap();
        assert_eq!(h.model, "m");
        assert!(h.stream);
        assert_eq!(parse_chat_head(br#"{"model":"a","mod\u0065l":"b"}"#).unwrap_err().code, "invalid_json");
    }
}

#[cfg(test)]
mod plain_runs {
    use super::*;

    #[test]
    fn matches_a_byte_at_a_time_scan() {
        let mut rng = crate::testrng::Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 70) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| match rng.next() % 12 {
                    0 => b'"',
                    1 => b'\\',
                    2 => (rng.next() % 0x20) as u8,
                    3 => 0x80 | (rng.next() % 0x80) as u8,
                    _ => 0x20 + (rng.next() % 0x60) as u8,
                })
                .collect();
            let naive = b.iter().position(|&c| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c)).unwrap_or(len);
            assert_eq!(plain_run(&b), naive, "{b:?}");
        }
    }

    #[test]
    fn strings_must_be_utf8() {
        for at in 0..40 {
            let mut b = format!("{{\"model\":\"m\",\"c\":\"{}\"}}", "é".repeat(20)).into_bytes();
            let start = b.len() - 42;
            b[start + at] = 0xff;
            assert_eq!(parse_chat_head(&b).unwrap_err().code, "invalid_json", "{at}");
            let good = format!("{{\"c\":\"{}✓{}\",\"model\":\"m\"}}", "x".repeat(at), "y".repeat(40 - at));
            assert_eq!(parse_chat_head(good.as_bytes()).unwrap().model, "m");
        }
        // Non-ASCII outside strings, an overlong form and a surrogate in UTF-8.
        for b in [
            &b"{\"model\":\"m\"}\xc3\xa9"[..],
            b"{\"model\":\"\xc0\xaf\"}",
            b"{\"model\":\"m\",\"c\":\"\xed\xa0\x80\"}",
        ] {
            assert_eq!(parse_chat_head(b).unwrap_err().code, "invalid_json", "{b:?}");
        }
    }
}
