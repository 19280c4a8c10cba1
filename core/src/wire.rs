//! How a plan leaves the routing filter.
//!
//! The plan is one text, [`AttemptState`]: per attempt, the channel, its Envoy
//! cluster and the exact bytes to splice in place of `model`. Who reads it:
//! - the per-attempt upstream filter (both shims), to rewrite each attempt;
//! - the cluster choice for each attempt. The dynamic module writes the text into
//!   dynamic metadata, where its own cluster specifier reads the attempt's cluster
//!   ([`attempt_cluster`]) and the attempt filter reads the rest. Wasm cannot write
//!   metadata in Envoy 1.40: the wasm filter keeps the text in filter state and
//!   sets a request header that `header_to_metadata` decodes (`PROTOBUF_VALUE`,
//!   `BASE64`) for Envoy's `priority_group` specifier: a base64
//!   `google.protobuf.Value` holding the `priority_groups` list.

use base64::Engine;

use crate::error::RouterError;

// Minimal protobuf writer for google.protobuf.Value / Struct / ListValue.
// Value: string_value = 3, number_value = 2 (double), struct_value = 5, list_value = 6.
// Struct: fields = 1 (map entry: key = 1, value = 2). ListValue: values = 1.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn value_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    put_len_field(&mut v, 3, s.as_bytes());
    v
}

fn value_number(n: f64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    put_varint(&mut v, u64::from(2u32 << 3 | 1));
    v.extend_from_slice(&n.to_le_bytes());
    v
}

fn value_struct(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut s = Vec::new();
    for (key, value) in fields {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 4);
        put_len_field(&mut entry, 1, key.as_bytes());
        put_len_field(&mut entry, 2, value);
        put_len_field(&mut s, 1, &entry);
    }
    let mut v = Vec::with_capacity(s.len() + 4);
    put_len_field(&mut v, 5, &s);
    v
}

fn value_list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut l = Vec::new();
    for item in items {
        put_len_field(&mut l, 1, item);
    }
    let mut v = Vec::with_capacity(l.len() + 4);
    put_len_field(&mut v, 6, &l);
    v
}

/// The `priority_groups` value (a `google.protobuf.Value` list) for the cluster
/// specifier: one group per attempt, each holding that attempt's cluster.
fn priority_groups_value<'a>(clusters: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let groups: Vec<Vec<u8>> = clusters
        .into_iter()
        .enumerate()
        .map(|(i, cluster)| {
            let member = value_struct(&[("cluster_name", value_string(cluster)), ("weight", value_number(1.0))]);
            value_struct(&[("name", value_string(&format!("a{i}"))), ("clusters", value_list(&[member]))])
        })
        .collect();
    value_list(&groups)
}

/// [`priority_groups_value`] in base64, ready for `header_to_metadata` (wasm path).
pub fn priority_groups_header<'a>(clusters: impl IntoIterator<Item = &'a str>) -> String {
    base64::engine::general_purpose::STANDARD.encode(priority_groups_value(clusters))
}

/// The plan as the per-attempt side reads it, one text:
///
/// ```text
/// sar3 <request id> <body_len> <span_start> <span_end> <flags> <usage edit> <endpoint> <requested model JSON literal>
/// <channel_id> <cluster> <model JSON literal, or "=" when the body is sent unchanged>
/// ...one line per attempt
/// ```
///
/// Channel ids and cluster names contain no spaces and a JSON string literal no
/// newline, so the format needs no escaping. The literal is exactly the bytes
/// spliced over the span. Flags: `p` keep the path, `s` a streaming request, `u`
/// the client asked for the usage event, `n` usage accounting is off (`-`: none). The usage edit is `-` or
/// `<start>,<end>`: the bytes where the attempt asks for the usage event (see
/// [`UsageEdit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptState {
    /// Unique per worker thread: ties each attempt to its request, whose filters all
    /// run on that thread (see the shims' unanswered-attempt ledgers).
    pub request_id: u64,
    pub body_len: usize,
    pub model_span: (usize, usize),
    /// Path appended to the channel's prefix, e.g. `/chat/completions`.
    pub endpoint: String,
    pub options: PlanOptions,
    /// The model as the client asked for it (JSON literal), for attempts that keep it.
    pub requested: String,
    pub attempts: Vec<AttemptRewrite>,
}

/// What every attempt of a plan shares besides the body's layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Every attempt's path equals the client's: no attempt rewrites `:path`.
    pub keep_path: bool,
    /// A streaming request.
    pub stream: bool,
    /// The client asked for the usage event (`stream_options.include_usage`).
    pub client_usage: bool,
    /// Where each attempt asks for the usage event the client did not.
    pub usage_edit: Option<UsageEdit>,
    /// Usage accounting is off: attempts pass answers through unread.
    pub unaccounted: bool,
}

/// Asking a streaming attempt for its usage event: the byte range of the
/// client's `stream_options` value, replaced with `{"include_usage":true}`, or,
/// when there is none (start equals end), the place just inside the top-level
/// object where `"stream_options":{"include_usage":true},` is inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageEdit {
    pub span: (usize, usize),
}

impl UsageEdit {
    pub const INSERT: &'static str = "\"stream_options\":{\"include_usage\":true},";
    pub const REPLACE: &'static str = "{\"include_usage\":true}";

    /// The bytes to put over `span`.
    pub fn literal(&self) -> &'static str {
        if self.span.0 == self.span.1 {
            Self::INSERT
        } else {
            Self::REPLACE
        }
    }
}

impl PlanOptions {
    fn push(&self, s: &mut String) {
        s.push(' ');
        let len = s.len();
        for (on, flag) in [(self.keep_path, 'p'), (self.stream, 's'), (self.client_usage, 'u'), (self.unaccounted, 'n')]
        {
            if on {
                s.push(flag);
            }
        }
        if s.len() == len {
            s.push('-');
        }
        s.push(' ');
        match self.usage_edit {
            Some(e) => {
                push_decimal(s, e.span.0 as u64);
                s.push(',');
                push_decimal(s, e.span.1 as u64);
            }
            None => s.push('-'),
        }
    }

    fn parse(flags: &str, edit: &str) -> Option<Self> {
        let usage_edit = match edit {
            "-" => None,
            _ => {
                let (a, b) = edit.split_once(',')?;
                let span: (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if span.0 > span.1 {
                    return None;
                }
                Some(UsageEdit { span })
            }
        };
        Some(Self {
            keep_path: flags.contains('p'),
            stream: flags.contains('s'),
            client_usage: flags.contains('u'),
            unaccounted: flags.contains('n'),
            usage_edit,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRewrite {
    pub channel_id: String,
    /// The channel's Envoy cluster.
    pub cluster: String,
    /// New JSON literal for `model`; `None` keeps the body as the client sent it.
    pub model_literal: Option<String>,
}

impl AttemptRewrite {
    pub fn new(channel_id: &str, cluster: &str, requested: &str, upstream_model: &str) -> Self {
        Self {
            channel_id: channel_id.to_string(),
            cluster: cluster.to_string(),
            model_literal: model_literal(requested, upstream_model),
        }
    }
}

/// The JSON literal spliced over `model` for a channel that knows the requested
/// model as `upstream_model`; `None` when the body goes unchanged.
pub fn model_literal(requested: &str, upstream_model: &str) -> Option<String> {
    if requested == upstream_model {
        None
    } else {
        serde_json::to_string(upstream_model).ok()
    }
}

pub(crate) fn push_decimal(s: &mut String, n: u64) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// Route-action overrides `render-envoy` declares on the module's cluster
/// specifier, one per retry count: `retries_0`, `retries_1`, ...
pub const RETRIES_OVERRIDE_PREFIX: &str = "retries_";

/// `text` as a JSON string literal (quotes and escapes as serde_json writes them).
fn push_json_string(s: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        s.push('"');
        s.push_str(text);
        s.push('"');
    } else {
        s.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// A JSON string literal's value; `None` when it is not one.
pub(crate) fn json_string(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if inner.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        return Some(inner.to_string());
    }
    serde_json::from_str(literal).ok()
}

/// The first line of an encoded [`AttemptState`], borrowed: what
/// [`encode_plan`] writes without building the owned state first.
pub struct PlanHead<'a> {
    pub request_id: u64,
    pub body_len: usize,
    pub model_span: (usize, usize),
    pub endpoint: &'a str,
    pub options: PlanOptions,
    /// The requested model (plain text; written as a JSON literal).
    pub requested: &'a str,
}

/// The plan text: `head`, then one line per attempt (channel id, cluster, and the
/// model's JSON literal or `None` for "unchanged"). Built by hand, not with
/// `format!`: this runs once per request.
pub fn encode_plan<'a, L: AsRef<str>>(
    head: &PlanHead,
    attempts: impl Iterator<Item = (&'a str, &'a str, Option<L>)>,
) -> String {
    let mut s = String::with_capacity(128 + head.requested.len());
    s.push_str(TAG);
    for n in [head.request_id, head.body_len as u64, head.model_span.0 as u64, head.model_span.1 as u64] {
        s.push(' ');
        push_decimal(&mut s, n);
    }
    head.options.push(&mut s);
    s.push(' ');
    s.push_str(head.endpoint);
    s.push(' ');
    push_json_string(&mut s, head.requested);
    s.push('\n');
    for (channel_id, cluster, model_literal) in attempts {
        s.push_str(channel_id);
        s.push(' ');
        s.push_str(cluster);
        s.push(' ');
        s.push_str(model_literal.as_ref().map_or("=", AsRef::as_ref));
        s.push('\n');
    }
    s
}

/// `s` split at the first `sep` (an ASCII byte, so both halves are valid UTF-8),
/// without the separator. A byte loop: the plan's words are short, and this runs
/// on every attempt and cluster choice.
fn split_at_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// The plan's attempt lines (`\n`-terminated; the last may lack it).
fn plan_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match split_at_byte(rest, b'\n') {
            Some((line, tail)) => {
                rest = tail;
                Some(line)
            }
            None => Some(std::mem::take(&mut rest)),
        }
    })
}

fn corrupt() -> RouterError {
    RouterError::new(500, "server_error", "internal_error", "router attempt state is corrupt")
}

/// One attempt line of an encoded [`AttemptState`], read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLine<'a> {
    pub channel_id: &'a str,
    pub cluster: &'a str,
    /// New JSON literal for `model`; `None` keeps the body as the client sent it.
    pub model_literal: Option<&'a str>,
}

/// An encoded [`AttemptState`] read in place, without copying: what each attempt's
/// filter needs (it runs once per attempt, so it should not allocate).
#[derive(Debug, Clone, Copy)]
pub struct AttemptView<'a> {
    pub request_id: u64,
    pub body_len: usize,
    pub model_span: (usize, usize),
    pub endpoint: &'a str,
    pub options: PlanOptions,
    /// The requested model as a JSON literal.
    requested: &'a str,
    /// The attempt lines (checked by `parse`).
    attempts: &'a str,
    /// Some attempt changes `model`, so the body length differs between attempts.
    pub rewrites_model: bool,
}

impl<'a> AttemptView<'a> {
    pub fn parse(text: &'a str) -> Result<Self, RouterError> {
        let (head, attempts) = split_at_byte(text, b'\n').ok_or_else(corrupt)?;
        // Eight words; the last (the requested model's JSON literal) may hold spaces.
        let mut rest = head;
        let mut word = || {
            let (w, tail) = split_at_byte(rest, b' ').ok_or_else(corrupt)?;
            rest = tail;
            Ok::<&str, RouterError>(w)
        };
        if word()? != TAG {
            return Err(corrupt());
        }
        let request_id = word()?.parse::<u64>().map_err(|_| corrupt())?;
        let body_len = word()?.parse::<usize>().map_err(|_| corrupt())?;
        let model_span =
            (word()?.parse::<usize>().map_err(|_| corrupt())?, word()?.parse::<usize>().map_err(|_| corrupt())?);
        let flags = word()?;
        let options = PlanOptions::parse(flags, word()?).ok_or_else(corrupt)?;
        let endpoint = word()?;
        let requested = rest;
        let edit_fits = options
            .usage_edit
            .is_none_or(|e| e.span.1 <= body_len && (e.span.1 <= model_span.0 || e.span.0 >= model_span.1));
        if model_span.0 > model_span.1 || model_span.1 > body_len || !edit_fits || !requested.starts_with('"') {
            return Err(corrupt());
        }
        let mut view =
            Self { request_id, body_len, model_span, endpoint, options, requested, attempts, rewrites_model: false };
        for line in plan_lines(attempts) {
            let a = parse_line(line).ok_or_else(corrupt)?;
            view.rewrites_model |= a.model_literal.is_some();
        }
        Ok(view)
    }

    /// The model as the client asked for it.
    pub fn requested(&self) -> Option<String> {
        json_string(self.requested)
    }

    pub fn lines(&self) -> impl Iterator<Item = AttemptLine<'a>> + 'a {
        plan_lines(self.attempts).filter_map(parse_line)
    }

    /// Attempt `number` (1 for the first); past the end of the plan the last one
    /// again, as the cluster choice does.
    pub fn attempt(&self, number: usize) -> Option<AttemptLine<'a>> {
        nth_attempt(self.lines(), number)
    }

    /// The body edits for `line`, in body order: its model, and the usage ask.
    pub fn edits_for(&self, line: &AttemptLine<'a>) -> Vec<((usize, usize), &'a str)> {
        let mut edits = Vec::with_capacity(2);
        if let Some(lit) = line.model_literal {
            edits.push((self.model_span, lit));
        }
        if let Some(e) = self.options.usage_edit {
            edits.push((e.span, e.literal()));
        }
        edits.sort_unstable_by_key(|(span, _)| span.0);
        edits
    }

    /// Body length once `line`'s edits are made.
    pub fn body_len_for(&self, line: &AttemptLine) -> usize {
        let mut len = self.body_len;
        if let Some(lit) = line.model_literal {
            len = len - (self.model_span.1 - self.model_span.0) + lit.len();
        }
        if let Some(e) = self.options.usage_edit {
            len = len - (e.span.1 - e.span.0) + e.literal().len();
        }
        len
    }

    /// Whether attempts change the body's length (so each sets `content-length`).
    pub fn changes_length(&self) -> bool {
        self.rewrites_model || self.options.usage_edit.is_some()
    }
}

fn parse_line(line: &str) -> Option<AttemptLine<'_>> {
    let (channel_id, rest) = split_at_byte(line, b' ')?;
    let (cluster, literal) = split_at_byte(rest, b' ')?;
    if channel_id.is_empty() || cluster.is_empty() {
        return None;
    }
    Some(AttemptLine { channel_id, cluster, model_literal: (literal != "=").then_some(literal) })
}

/// First word of an encoded [`AttemptState`]; bumped when the format changes.
const TAG: &str = "sar3";

/// Attempt `number` (1 for the first) among `lines`, or the last one past the end.
fn nth_attempt<'a>(lines: impl Iterator<Item = AttemptLine<'a>>, number: usize) -> Option<AttemptLine<'a>> {
    let mut last = None;
    for (i, line) in lines.enumerate() {
        last = Some(line);
        if i + 1 >= number {
            break;
        }
    }
    last
}

/// For a cluster specifier, without decoding the rest of an encoded
/// [`AttemptState`]: the cluster for attempt `attempt` (1 for the first; past the
/// end of the plan the last cluster answers again, as Envoy's `priority_group`
/// specifier does) and how many attempts the plan has. `None` when the text is
/// not a plan.
pub fn attempt_cluster(text: &str, attempt: usize) -> Option<(&str, usize)> {
    let (head, lines) = split_at_byte(text, b'\n')?;
    if !head.starts_with(TAG) {
        return None;
    }
    let lines = || plan_lines(lines).filter_map(parse_line);
    let chosen = nth_attempt(lines(), attempt)?;
    Some((chosen.cluster, lines().count()))
}

impl AttemptState {
    pub fn encode(&self) -> String {
        let head = PlanHead {
            request_id: self.request_id,
            body_len: self.body_len,
            model_span: self.model_span,
            endpoint: &self.endpoint,
            options: self.options,
            requested: &self.requested,
        };
        encode_plan(
            &head,
            self.attempts.iter().map(|a| (a.channel_id.as_str(), a.cluster.as_str(), a.model_literal.as_deref())),
        )
    }

    pub fn decode(text: &str) -> Result<Self, RouterError> {
        let v = AttemptView::parse(text)?;
        let requested = v.requested().ok_or_else(corrupt)?;
        let attempts = v
            .lines()
            .map(|a| AttemptRewrite {
                channel_id: a.channel_id.to_string(),
                cluster: a.cluster.to_string(),
                model_literal: a.model_literal.map(str::to_string),
            })
            .collect();
        Ok(Self {
            request_id: v.request_id,
            body_len: v.body_len,
            model_span: v.model_span,
            endpoint: v.endpoint.to_string(),
            options: v.options,
            requested,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_groups_encode_as_protobuf_value() {
        // Value{list_value{values:[Value{struct_value{fields{"name": "a0", "clusters": [...]}}}]}}
        let h = priority_groups_header(["c"]);
        let member_fields = {
            let mut m = Vec::new();
            let mut e = Vec::new();
            put_len_field(&mut e, 1, b"cluster_name");
            put_len_field(&mut e, 2, &value_string("c"));
            put_len_field(&mut m, 1, &e);
            let mut e = Vec::new();
            put_len_field(&mut e, 1, b"weight");
            put_len_field(&mut e, 2, &[0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
            put_len_field(&mut m, 1, &e);
            m
        };
        let value = base64::engine::general_purpose::STANDARD.decode(&h).unwrap();
        assert_eq!(value, priority_groups_value(["c"]));
        assert!(value.windows(member_fields.len()).any(|w| w == member_fields.as_slice()));
        // The struct holding cluster_name and weight ends with the double 1.0.
        assert!(member_fields.ends_with(&[0xf0, 0x3f]));
        assert_eq!(value_number(1.0), vec![0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
        assert_eq!(value_string("ab"), vec![0x1a, 2, b'a', b'b']);
    }

    #[test]
    fn each_attempt_finds_its_cluster_and_the_last_repeats() {
        let s = AttemptState {
            request_id: 1,
            body_len: 10,
            model_span: (1, 2),
            endpoint: "/chat/completions".into(),
            options: PlanOptions { keep_path: true, ..PlanOptions::default() },
            requested: "m".into(),
            attempts: vec![
                AttemptRewrite::new("a", "channel_a", "m", "m"),
                AttemptRewrite::new("b", "channel_b", "m", "x"),
            ],
        };
        let text = s.encode();
        assert_eq!(attempt_cluster(&text, 0), Some(("channel_a", 2)));
        assert_eq!(attempt_cluster(&text, 1), Some(("channel_a", 2)));
        assert_eq!(attempt_cluster(&text, 2), Some(("channel_b", 2)));
        assert_eq!(attempt_cluster(&text, 7), Some(("channel_b", 2)));
        for bad in ["", "sar1 x\na channel_a =\n", "sar2 1 2 3 4 p - /x \"m\"\n", "sar2\na\n"] {
            assert_eq!(attempt_cluster(bad, 1), None, "{bad:?}");
        }
    }

    #[test]
    fn attempt_state_round_trips() {
        let s = AttemptState {
            request_id: 7,
            body_len: 100,
            model_span: (9, 17),
            endpoint: "/chat/completions".into(),
            options: PlanOptions { keep_path: true, ..PlanOptions::default() },
            requested: "gpt 4o".into(),
            attempts: vec![
                AttemptRewrite::new("a", "channel_a", "gpt-4o", "gpt-4o"),
                AttemptRewrite::new("b", "channel_b", "gpt-4o", "ep-1 with \"quote\"\n"),
            ],
        };
        let d = AttemptState::decode(&s.encode()).unwrap();
        assert_eq!(d, s);
        assert_eq!(d.attempts[0].model_literal, None);
        assert_eq!(d.attempts[1].model_literal.as_deref(), Some(r#""ep-1 with \"quote\"\n""#));
        let text = s.encode();
        let v = AttemptView::parse(&text).unwrap();
        let lines: Vec<_> = v.lines().collect();
        assert_eq!(v.body_len_for(&lines[0]), 100);
        assert_eq!(v.body_len_for(&lines[1]), 100 - 8 + d.attempts[1].model_literal.as_ref().unwrap().len());
        assert!(!v.options.stream);
    }

    #[test]
    fn every_option_combination_round_trips() {
        for bits in 0..16u8 {
            let options = PlanOptions {
                keep_path: bits & 1 != 0,
                stream: bits & 2 != 0,
                client_usage: bits & 4 != 0,
                unaccounted: bits & 8 != 0,
                usage_edit: None,
            };
            let s = AttemptState {
                request_id: 1,
                body_len: 20,
                model_span: (9, 12),
                endpoint: "/chat/completions".into(),
                options,
                requested: "m".into(),
                attempts: vec![AttemptRewrite::new("a", "channel_a", "m", "m")],
            };
            assert_eq!(AttemptState::decode(&s.encode()).unwrap().options, options);
        }
    }

    #[test]
    fn a_streaming_plan_carries_its_usage_ask() {
        for (span, literal) in [((1, 1), UsageEdit::INSERT), ((30, 48), UsageEdit::REPLACE)] {
            let s = AttemptState {
                request_id: 1,
                body_len: 60,
                model_span: (9, 12),
                endpoint: "/chat/completions".into(),
                options: PlanOptions {
                    keep_path: false,
                    stream: true,
                    client_usage: false,
                    usage_edit: Some(UsageEdit { span }),
                    unaccounted: false,
                },
                requested: "m".into(),
                attempts: vec![AttemptRewrite::new("a", "channel_a", "m", "vendor/m")],
            };
            let text = s.encode();
            assert_eq!(AttemptState::decode(&text).unwrap(), s);
            let v = AttemptView::parse(&text).unwrap();
            let line = v.lines().next().unwrap();
            let edits = v.edits_for(&line);
            assert_eq!(edits.len(), 2);
            assert!(edits[0].0 .0 <= edits[1].0 .0, "in body order");
            assert!(edits.iter().any(|(sp, lit)| *sp == span && *lit == literal));
            assert_eq!(v.body_len_for(&line), 60 - 3 + 10 - (span.1 - span.0) + literal.len());
            assert!(v.changes_length());
        }
        // An edit overlapping the model's span is a corrupt plan.
        assert!(AttemptView::parse("sar3 1 60 9 12 s 10,20 /chat/completions \"m\"\na channel_a =\n").is_err());
    }

    #[test]
    fn literals_and_numbers_match_serde_json() {
        for text in ["", "plain-model", "with space", "quote\"d", "back\\slash", "new\nline", "ünïcode", "\u{1}"] {
            let mut s = String::new();
            push_json_string(&mut s, text);
            assert_eq!(s, serde_json::to_string(text).unwrap());
            assert_eq!(json_string(&s).as_deref(), Some(text));
        }
        for n in [0u64, 7, 10, 1_234_567, u64::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        assert_eq!(json_string("nojson"), None);
        assert_eq!(json_string("\"unterminated"), None);
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        for s in [
            "",
            "sar3 1 2 3 - - /x",
            "sar1 1 2",
            "sar3 1 5 3 - - /x",
            "sar3 10 1 2 - - /x \"m\"\nnospace",
            "sar3 10 1 2 - - /x \"m\"\none space",
            "sar3 10 1 2 - 3 /x \"m\"\na c =\n",
            "sar3 10 1 2 - 5,3 /x \"m\"\na c =\n",
            "sar1 10 1 2 - /x nojson",
        ] {
            assert!(AttemptState::decode(s).is_err(), "{s}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    #[test]
    fn decoders_never_panic() {
        let mut rng = crate::testrng::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let alphabet = b"sar2 0123456789-p/\n\"=xyz";
        for _ in 0..20_000 {
            let s: String =
                (0..(next() % 80)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect();
            let _ = AttemptState::decode(&s);
            let _ = attempt_cluster(&s, (next() % 4) as usize);
            let _ = crate::health::HealthMap::decode(&s);
            let _ = crate::score::PerfMap::decode(&s);
        }
    }
}
